"""Training engine for ShuffleNetV2: one job per module, wired together by main.py.

Importing this package first is the bootstrap every entry point relies on: torch >= 2.5 loads device back-ends
(torch_npu) through entry points inside `import torch`, and a torch_npu installed without the CANN libraries then
kills `import torch` itself. Auto-loading is switched off here, before anything imports torch; torch_npu is
imported explicitly, behind a guard, by training.device.import_torch_npu. A value the user already set wins.
"""
import os

os.environ.setdefault("TORCH_DEVICE_BACKEND_AUTOLOAD", "0")
