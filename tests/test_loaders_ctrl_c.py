"""Ctrl-C while the parent fetches a batch from its data-loader workers ends in the parent's one line, every time.

A worker hands a batch's tensors to its parent as shared-memory file descriptors, served by the worker's
multiprocessing resource_sharer thread. A SIGINT that stops the parent in the middle of such a fetch cuts the
handshake, and the worker (which ignores SIGINT and waits to be shut down) used to print a ConnectionResetError /
BrokenPipeError traceback from resource_sharer after the parent's clean line. The loop below does nothing but fetch
batches, so most stops land in a fetch; main.py's stop is repeated as a user meets it.
"""
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT

from training.data import loaders

STOPS = 5
IMAGE_FOLDER = dict(classes=2, train_per_class=24, val_per_class=2, size=(24, 24))  # data_root's shape (conftest.py)
# The parent does nothing but fetch batches of many small tensors (workers have nothing to decode), so most stops
# land in a fetch.
FETCH_LOOP = """import sys
import training
import torch
from torch.utils.data import DataLoader
from training.data.loaders import IgnoreInterrupts


class Tensors(torch.utils.data.Dataset):
    def __len__(self):
        return 10 ** 9

    def __getitem__(self, index):
        return [torch.full((2,), float(index)) for _ in range(8)]


try:
    for count, batch in enumerate(DataLoader(Tensors(), batch_size=2, num_workers=2,
                                             worker_init_fn=IgnoreInterrupts())):
        if count == 10:
            print("fetching", flush=True)
except KeyboardInterrupt:
    print("stopped", file=sys.stderr, flush=True)
    sys.exit(130)
"""


def ctrl_c_after(argv, lines, seconds=0.0):
    """Start `argv` in its own process group, SIGINT the group (a terminal's Ctrl-C) `seconds` after `lines` lines
    of its stdout; returns (exit status, stderr)."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                               start_new_session=True, env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=REPO_ROOT)
    for count, _line in enumerate(process.stdout, 1):
        if count == lines:
            break
    time.sleep(seconds)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    return process.returncode, err


@pytest.mark.parametrize("stop", range(STOPS))
def test_a_stop_while_fetching_batches_is_the_parents_line_only(stop):
    code, err = ctrl_c_after([sys.executable, "-c", FETCH_LOOP], lines=1,
                             seconds=0.2 * stop)
    assert (code, err.strip()) == (130, "stopped"), err


@pytest.mark.slow
@pytest.mark.parametrize("stop", range(STOPS))
def test_main_stopped_by_ctrl_c_prints_one_line(stop, data_root, tmp_path):
    code, err = ctrl_c_after(
        [sys.executable, os.path.join(REPO_ROOT, "main.py"), "--data", data_root, "-a", "shufflenet_v2_x0_5",
         "-b", "2", "-j", "2", "--epochs", "50", "--train-crop-size", "32", "--val-resize-size", "32",
         "--val-crop-size", "32", "--device", "cpu", "-p", "1", "--seed", str(stop), "--output-dir",
         str(tmp_path / "out")], lines=6 + 3 * stop)
    lines = err.strip().splitlines()
    assert code == 130, err
    assert len(lines) == 1 and lines[0].startswith("error: interrupted by Ctrl-C after "), err


def test_the_quiet_hook_passes_other_errors_on():
    """Only resource_sharer's connection errors are dropped; an error raised elsewhere reaches the previous hook."""
    seen = []
    hook = loaders.CutHandoffsQuiet(lambda *info: seen.append(info[0]))
    for error in (ConnectionResetError, ValueError):
        try:
            raise error()
        except error:
            hook(*sys.exc_info())
    assert seen == [ConnectionResetError, ValueError]
