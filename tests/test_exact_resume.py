"""Exact resume with data workers and colour jitter on: the jitter factors come from DevicePreprocess's own
(seed, epoch) generator, so neither the worker count nor DataLoader iterator creation changes them."""
import os
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO_ROOT

import main
from tests.datasets import make_image_folder

# The users' settings: the default worker count (4) and the default colour jitter (0.2), stated explicitly.
BASE = ["-a", "shufflenet_v2_x0_5", "-j", "4", "--color-jitter", "0.2", "--train-crop-size", "32",
        "--val-resize-size", "32", "--val-crop-size", "32", "--device", "cpu", "--lr", "0.05", "--wd", "1e-4",
        "--seed", "3", "-b", "4", "--epochs", "3", "--steps-per-epoch", "2", "-p", "100", "--eval-freq", "100",
        "--momentum", "0.9", "--checkpoint-freq", "1"]

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("resume") / "data"), classes=3, train_per_class=4,
                             val_per_class=2, size=(36, 36))


@pytest.fixture(scope="module")
def uninterrupted(data_root, tmp_path_factory):
    """The reference run (it also saves checkpoint_epoch1). One intra-op thread like the resumed runs (the
    function-scoped one_thread fixture is not active yet here): a different thread count changes the sums."""
    out = str(tmp_path_factory.mktemp("full"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main.main(BASE + ["--data", data_root, "--output-dir", out]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def load(path):
    return torch.load(path, map_location="cpu")


def assert_same_weights(a, b):
    assert a["epoch"] == b["epoch"] == 3
    assert a["state_dict"].keys() == b["state_dict"].keys()
    different = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not different, different[:5]


def test_resume_with_workers_and_jitter_gives_identical_weights(data_root, uninterrupted, tmp_path):
    resumed = str(tmp_path / "resumed")
    assert main.main(BASE + ["--data", data_root, "--resume", os.path.join(uninterrupted, "checkpoint_epoch1.pth.tar"),
                             "--output-dir", resumed]) == 0
    assert_same_weights(load(os.path.join(uninterrupted, "checkpoint.pth.tar")),
                        load(os.path.join(resumed, "checkpoint.pth.tar")))


def test_sigkill_after_epoch_1_checkpoint_then_resume_gives_identical_weights(data_root, uninterrupted, tmp_path):
    out = str(tmp_path / "killed")
    epoch1 = os.path.join(out, "checkpoint_epoch1.pth.tar")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, os.path.join(REPO_ROOT, "main.py")] + BASE +
                               ["--data", data_root, "--output-dir", out],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 300
    while not os.path.exists(epoch1):  # written atomically: it exists only once complete
        assert process.poll() is None, process.communicate()[1]
        assert time.time() < deadline, "no epoch-1 checkpoint"
        time.sleep(0.02)
    process.kill()
    process.communicate()
    resumed = str(tmp_path / "resumed")
    assert main.main(BASE + ["--data", data_root, "--resume", epoch1, "--output-dir", resumed]) == 0
    assert_same_weights(load(os.path.join(uninterrupted, "checkpoint.pth.tar")),
                        load(os.path.join(resumed, "checkpoint.pth.tar")))
