"""Training engine for ShuffleNetV2: one job per module, wired together by main.py."""
