"""Exact resume: a run stopped after epoch 1 and resumed ends bit for bit where the run that was never stopped ends
(weights, and where the run has them EMA weights, momentum buffers, best Acc@1 and the RNG state), in each way a run
is stopped and resumed:
- loading in the training process (-j 0) with EMA and warm-up: --resume FILE of the epoch-1 copy, and --resume auto
  after a Ctrl-C in epoch 2;
- 4 data workers with colour jitter (the users' defaults): --resume FILE of the epoch-1 copy, and after a SIGKILL of
  the real process right after it wrote that copy. The jitter factors come from DevicePreprocess's own
  (seed, epoch) generator, so neither the worker count nor DataLoader iterator creation changes them.
A resume with other weight-decay groups than the saved optimizer's is one error line."""
import os
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO_ROOT, read_jsonl, tiny_run_args

import main
from training.checkpoints.checkpoint import torch_load

# Loading in the training process, with EMA, warm-up, an evaluation after every epoch and a step line per step.
IN_PROCESS = tiny_run_args("--lr", "0.05", "--wd", "1e-4", "--seed", "3", "-b", "4", "--epochs", "3",
                           "--steps-per-epoch", "2", "-p", "1", "--eval-freq", "1", "--model-ema", "0.5",
                           "--warm_up_epochs", "1", "--momentum", "0.9", "--color-jitter", "0.4")
# The users' settings: the default worker count (4) and the default colour jitter (0.2), stated explicitly.
WORKERS = tiny_run_args("--color-jitter", "0.2", "--lr", "0.05", "--wd", "1e-4", "--seed", "3", "-b", "4",
                        "--epochs", "3", "--steps-per-epoch", "2", "-p", "100", "--eval-freq", "100",
                        "--momentum", "0.9", "--checkpoint-freq", "1", workers=4)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def uninterrupted_run(flags, data_root, out):
    """The reference run, saving checkpoint_epoch1 too. One intra-op thread like the resumed runs (the
    function-scoped one_thread fixture is not active yet in a module-scoped fixture): a different thread count
    changes the sums."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main.main(flags + ["--data", data_root, "--checkpoint-freq", "1", "--output-dir", out]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def in_process_reference(data_root, tmp_path_factory):
    return uninterrupted_run(IN_PROCESS, data_root, str(tmp_path_factory.mktemp("in_process")))


@pytest.fixture(scope="module")
def workers_reference(data_root, tmp_path_factory):
    return uninterrupted_run(WORKERS, data_root, str(tmp_path_factory.mktemp("workers")))


def assert_identical(a, b, keys=("state_dict",)):
    """Both runs ended after epoch 3 with equal tensors under each of `keys`."""
    assert a["epoch"] == b["epoch"] == 3
    for key in keys:
        assert a[key].keys() == b[key].keys(), key
        different = [name for name in a[key] if not torch.equal(a[key][name], b[key][name])]
        assert not different, (key, different[:5])


@pytest.mark.smoke
def test_resume_from_epoch_1_ends_with_identical_weights_ema_momentum_and_rng(data_root, in_process_reference,
                                                                              tmp_path, capsys):
    full, resumed = in_process_reference, str(tmp_path / "resumed")
    assert main.main(IN_PROCESS + ["--data", data_root, "--resume", os.path.join(full, "checkpoint_epoch1.pth.tar"),
                                   "--output-dir", resumed]) == 0
    assert "=> resumed from" in capsys.readouterr().out
    a, b = torch_load(os.path.join(full, "checkpoint.pth.tar")), torch_load(os.path.join(resumed, "checkpoint.pth.tar"))
    assert_identical(a, b, keys=("state_dict", "model_ema"))
    momentum_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    momentum_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(momentum_a, momentum_b))
    assert a["best_acc1"] == b["best_acc1"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    # other weight-decay groups than the saved optimizer's: one error line naming the cause, not a traceback
    capsys.readouterr()
    assert main.main(IN_PROCESS + ["--data", data_root, "--norm-weight-decay", "0", "--bias-weight-decay", "0",
                                   "--resume", os.path.join(full, "checkpoint.pth.tar"),
                                   "--output-dir", resumed]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "optimizer state does not fit these flags" in err[0], err


def test_resume_auto_after_ctrl_c_in_epoch_2_continues_at_epoch_2_with_identical_weights(
        data_root, in_process_reference, tmp_path, capsys, monkeypatch):
    from training import engine
    argv = IN_PROCESS + ["--data", data_root]
    stopped = str(tmp_path / "stopped")
    real_train = engine.train_one_epoch

    def killed_in_epoch_2(*args, **kwargs):
        if kwargs["epoch"] == 1:
            raise KeyboardInterrupt()
        return real_train(*args, **kwargs)
    monkeypatch.setattr(engine, "train_one_epoch", killed_in_epoch_2)
    assert main.main(argv + ["--resume", "auto", "--output-dir", stopped]) == 130
    first = capsys.readouterr().out.splitlines()
    assert first[0] == "=> --resume auto: no checkpoint in {}, starting fresh".format(os.path.abspath(stopped))
    monkeypatch.setattr(engine, "train_one_epoch", real_train)

    assert main.main(argv + ["--resume", "auto", "--output-dir", stopped]) == 0
    out = capsys.readouterr().out.splitlines()
    rolling = os.path.join(stopped, "checkpoint.pth.tar")
    assert out[0] == "=> --resume auto: continuing from {} (after 1 epoch(s))".format(os.path.abspath(rolling))
    assert "=> resumed from {} at epoch 1 (best Acc@1".format(rolling) in "\n".join(out)
    assert [line.split("]")[1] for line in out if " Epoch: [" in line][0] == " Epoch: [1"  # the second epoch
    a, b = torch_load(os.path.join(in_process_reference, "checkpoint.pth.tar")), torch_load(rolling)
    assert b["args"]["resume"] == rolling
    assert_identical(a, b, keys=("state_dict", "model_ema"))
    epochs = [r["epoch"] for r in read_jsonl(os.path.join(stopped, "metrics.jsonl")) if r["kind"] == "epoch"]
    assert epochs == [0, 1, 2]  # the resumed run appended to the stopped run's records


@pytest.mark.smoke
def test_resume_with_workers_and_jitter_gives_identical_weights(data_root, workers_reference, tmp_path):
    resumed = str(tmp_path / "resumed")
    assert main.main(WORKERS + ["--data", data_root, "--resume",
                                os.path.join(workers_reference, "checkpoint_epoch1.pth.tar"),
                                "--output-dir", resumed]) == 0
    assert_identical(torch_load(os.path.join(workers_reference, "checkpoint.pth.tar")),
                     torch_load(os.path.join(resumed, "checkpoint.pth.tar")))


@pytest.mark.slow
def test_sigkill_after_epoch_1_checkpoint_then_resume_gives_identical_weights(data_root, workers_reference, tmp_path):
    out = str(tmp_path / "killed")
    epoch1 = os.path.join(out, "checkpoint_epoch1.pth.tar")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, os.path.join(REPO_ROOT, "main.py")] + WORKERS +
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
    assert main.main(WORKERS + ["--data", data_root, "--resume", epoch1, "--output-dir", resumed]) == 0
    assert_identical(torch_load(os.path.join(workers_reference, "checkpoint.pth.tar")),
                     torch_load(os.path.join(resumed, "checkpoint.pth.tar")))
