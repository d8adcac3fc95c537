"""Entry of the four ModelZoo launchers test/train_{full,performance}_{1p,8p}.sh: runs training/launch/modelzoo.py.

The scripts put this clone first on PYTHONPATH and start this file by its path, so the `training` package comes
from this repository whatever the current folder. By hand, from the repository root:
python3 -m tools.modelzoo_launch --mode full --scale 8p [flags]
"""
import sys

from training.errors import run_cli
from training.launch.modelzoo import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
