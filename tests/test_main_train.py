"""main.py end to end on CPU: log lines, metrics.jsonl, checkpoints, exact resume, SIGKILL / SIGTERM."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torchvision
from conftest import REPO_ROOT

import main
from tests.datasets import make_image_folder
from training import modelzoo_log as zlog
from training.checkpoint import torch_load

SMALL = ["-a", "shufflenet_v2_x0_5", "-j", "0", "--train-crop-size", "32", "--val-resize-size", "32",
         "--val-crop-size", "32", "--device", "cpu", "--lr", "0.05", "--wd", "1e-4", "--seed", "3"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("train") / "data"), classes=3, train_per_class=4,
                             val_per_class=2, size=(36, 36))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def records(path):
    with open(path) as stream:
        return [json.loads(line) for line in stream]


def load(path):
    return torch_load(path, weights_only=True)


def test_logs_metrics_and_checkpoints(data_root, tmp_path, capsys):
    out = str(tmp_path / "out")
    argv = SMALL + ["--data", data_root, "-b", "4", "--epochs", "2", "--steps-per-epoch", "2", "-p", "1",
                    "--amp", "--model-ema", "0.5", "--bn-recalibrate", "2", "--checkpoint-freq", "1",
                    "--output-dir", out]
    assert main.main(argv) == 0
    stdout = capsys.readouterr().out.splitlines()
    parsed = zlog.parse_log(stdout)
    steps = [r for r in parsed if r["kind"] == "step"]
    assert [(r["epoch"], r["step"], r["steps"]) for r in steps] == [(0, 0, 2), (0, 1, 2), (1, 0, 2), (1, 1, 2)]
    assert all(r["loss"] > 0 for r in steps)
    fps = [r for r in parsed if r["kind"] == "fps"]
    assert len(fps) == 2 and all(r["fps"] > 0 and r["step_time"] > 0 for r in fps)
    accs = [r for r in parsed if r["kind"] == "acc"]
    # eval after the last epoch and after BN recalibration, each for the model and its EMA
    assert [r["ema"] for r in accs] == [False, True, False, True]
    assert all(0 <= r["acc1"] <= r["acc5"] <= 100 for r in accs)
    assert any(line.startswith("warning: --amp: apex is not available") for line in stdout)
    tests = [line for line in stdout if " Test: [" in line]
    assert tests and not any("Epoch:" in line for line in tests)
    assert all(line.startswith("[cpu id: 0 ] ") for line in stdout if zlog.parse_line(line))

    metrics = records(os.path.join(out, "metrics.jsonl"))
    kinds = [r["kind"] for r in metrics]
    assert kinds.count("step") == 4 and kinds.count("epoch") == 2 and kinds.count("eval") == 4
    step = metrics[0]
    assert set(step) == {"kind", "epoch", "step", "steps", "loss", "lr", "acc1", "acc5", "batch_time", "data_time"}
    assert step["lr"] == pytest.approx(0.05)
    epoch = [r for r in metrics if r["kind"] == "epoch"][-1]
    assert epoch["bad_images"] == 0 and epoch["fps"] == pytest.approx(fps[-1]["fps"], rel=1e-3)
    evals = [r for r in metrics if r["kind"] == "eval"]
    assert [r["ema"] for r in evals] == [False, True, False, True] and all(r["images"] == 6 for r in evals)
    assert evals[2]["acc1"] == pytest.approx(accs[2]["acc1"], abs=1e-3)

    assert sorted(os.listdir(out)) == ["checkpoint.pth.tar", "checkpoint_epoch1.pth.tar",
                                       "checkpoint_epoch2.pth.tar", "metrics.jsonl", "model_best.pth.tar"]
    saved = load(os.path.join(out, "checkpoint.pth.tar"))
    assert saved["epoch"] == 2 and saved["arch"] == "shufflenet_v2_x0_5"
    assert saved["classes"] == ["class_0", "class_1", "class_2"] and saved["args"]["lr"] == 0.05
    assert isinstance(saved["best_acc1"], float) and "model_ema" in saved and "rng" in saved
    net = torchvision.models.shufflenet_v2_x0_5(num_classes=3)
    net.load_state_dict(saved["state_dict"])
    assert load(os.path.join(out, "checkpoint_epoch1.pth.tar"))["epoch"] == 1

    # --evaluate --resume scores exactly the saved (recalibrated) weights, in the same precision as the run's own
    # evaluation (--amp: bf16 autocast, whose rounding differs from fp32 on CPUs with native bf16)
    assert main.main(SMALL + ["--data", data_root, "-b", "4", "--evaluate", "--amp", "--resume",
                              os.path.join(out, "checkpoint.pth.tar"), "--output-dir", out]) == 0
    again = [r for r in zlog.parse_log(capsys.readouterr().out.splitlines()) if r["kind"] == "acc"]
    assert again == [accs[2]]


def test_resume_after_epoch_1_ends_with_identical_weights(data_root, tmp_path, capsys):
    base = SMALL + ["--data", data_root, "-b", "4", "--epochs", "3", "--steps-per-epoch", "2", "-p", "100",
                    "--model-ema", "0.5", "--eval-freq", "1", "--warm_up_epochs", "1", "--momentum", "0.9"]
    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    assert main.main(base + ["--checkpoint-freq", "1", "--output-dir", full]) == 0
    assert main.main(base + ["--resume", os.path.join(full, "checkpoint_epoch1.pth.tar"),
                             "--output-dir", resumed]) == 0
    assert "=> resumed from" in capsys.readouterr().out
    a, b = load(os.path.join(full, "checkpoint.pth.tar")), load(os.path.join(resumed, "checkpoint.pth.tar"))
    assert a["epoch"] == b["epoch"] == 3
    for key in ("state_dict", "model_ema"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    momentum_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    momentum_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(momentum_a, momentum_b))
    assert a["best_acc1"] == b["best_acc1"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    # other weight-decay groups than the saved optimizer's: one error line naming the cause, not a traceback
    capsys.readouterr()
    assert main.main(base + ["--norm-weight-decay", "0", "--bias-weight-decay", "0", "--resume",
                             os.path.join(full, "checkpoint.pth.tar"), "--output-dir", resumed]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "optimizer state does not fit these flags" in err[0], err


def start(argv, out):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, os.path.join(REPO_ROOT, "main.py")] + argv + ["--output-dir", out],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env)


def wait_for(predicate, process, timeout=120):
    deadline = time.time() + timeout
    while not predicate():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_killed_run_resumes_from_its_last_checkpoint(data_root, tmp_path, capsys):
    out = str(tmp_path / "out")
    ckpt = os.path.join(out, "checkpoint.pth.tar")
    epochs = 12  # enough that both signals surely land mid-run, on a fast machine too
    argv = SMALL + ["--data", data_root, "-b", "2", "--epochs", str(epochs), "-p", "1", "--eval-freq", "100"]
    # SIGKILL while epoch 1 runs: the checkpoint of epoch 0 must load
    process = start(argv, out)
    wait_for(lambda: os.path.exists(ckpt), process)
    time.sleep(0.3)
    process.kill()
    process.communicate()
    first = load(ckpt)
    assert 1 <= first["epoch"] < epochs

    # resume, then SIGTERM mid-epoch: exit 130 with a message, checkpoint still good
    process = start(argv + ["--resume", ckpt], out)
    wait_for(lambda: load(ckpt)["epoch"] > first["epoch"], process)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted by SIGTERM")
    assert "Traceback" not in stderr
    second = load(ckpt)
    assert first["epoch"] < second["epoch"] < epochs

    # finish the run
    assert main.main(argv + ["--resume", ckpt, "--output-dir", out]) == 0
    assert load(ckpt)["epoch"] == epochs
