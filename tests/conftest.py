"""Shared test setup: the repository root on sys.path, so tests import `main`, `models`, `training` and
`tests.datasets` whether pytest is started as `pytest` or `python -m pytest`, from any folder."""
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKES_DIR = os.path.join(REPO_ROOT, "tests", "fakes")

if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
