"""Ctrl-C stops a run with data workers cleanly (training/data/loaders.py): the workers ignore SIGINT and leave the
stop to their parent, so the terminal's SIGINT to the whole process group ends in the parent's one error line, exit
130, and no worker traceback."""
import glob
import os
import signal
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from training.data.loaders import IgnoreInterrupts

IMAGE_FOLDER = dict(classes=2, train_per_class=24, val_per_class=2, size=(48, 48))  # data_root's shape (conftest.py)


def children():
    pids = set()
    for path in glob.glob("/proc/self/task/*/children"):
        try:
            with open(path) as stream:
                pids.update(int(pid) for pid in stream.read().split())
        except FileNotFoundError:  # a thread that ended since the glob (a finished loader's)
            continue
    return pids


def ignores_sigint(pid):
    with open("/proc/{}/status".format(pid)) as stream:
        mask = [line.split()[1] for line in stream if line.startswith("SigIgn:")][0]
    return bool(int(mask, 16) >> (signal.SIGINT - 1) & 1)


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads worker signal masks from Linux /proc")
def test_loader_workers_ignore_sigint(data_root):
    """Train and val loaders' workers ignore SIGINT; workers of a plain DataLoader (the control) do not."""
    import torch.utils.data
    from training.data import loaders
    train, _ = loaders.build_train_loader(os.path.join(data_root, "train"), 2, 2, crop_size=32, seed=0)
    val = loaders.build_val_loader(os.path.join(data_root, "val"), 1, 2, resize_size=36, crop_size=32)
    plain = torch.utils.data.DataLoader(list(range(8)), batch_size=2, num_workers=2)
    for loader, quiet in ((plain, False), (train, True), (val, True)):
        before = children()
        iterator = iter(loader)
        next(iterator), next(iterator)  # a batch from each worker: both have run their worker_init_fn
        workers = children() - before
        assert len(workers) == 2
        assert [ignores_sigint(pid) for pid in workers] == [quiet, quiet]
        del iterator
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the parent still stops on Ctrl-C


def test_worker_init_keeps_the_loaders_own(monkeypatch):
    seen = []
    monkeypatch.setattr(signal, "signal", lambda signum, handler: seen.append((signum, handler)))
    IgnoreInterrupts(seen.append)(3)
    assert seen == [(signal.SIGINT, signal.SIG_IGN), 3]


@pytest.mark.slow
def test_ctrl_c_to_the_process_group_prints_one_line(data_root, tmp_path):
    out = str(tmp_path / "out")
    process = subprocess.Popen(
        [sys.executable, os.path.join(REPO_ROOT, "main.py"), "--data", data_root, "-a", "shufflenet_v2_x0_5",
         "-b", "4", "-j", "2", "--epochs", "50", "--train-crop-size", "32", "--val-resize-size", "32",
         "--val-crop-size", "32", "--device", "cpu", "-p", "1", "--seed", "0", "--output-dir", out],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, start_new_session=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=REPO_ROOT)
    for count, _line in enumerate(process.stdout):  # mid-epoch, workers busy
        if count == 8:
            break
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted by Ctrl-C after "), err
