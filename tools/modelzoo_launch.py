"""Entry of the four ModelZoo launchers test/train_{full,performance}_{1p,8p}.sh: runs training/launch/modelzoo.py.

A script path rather than `python3 -m training.launch.modelzoo`, so the `training` package always comes from this
repository, whatever the current folder. Usage: python3 tools/modelzoo_launch.py --mode full --scale 8p [flags]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from training.errors import run_cli  # noqa: E402
from training.launch.modelzoo import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli(main))
