"""main.py end to end on CPU: log lines, metrics.jsonl, checkpoints, SIGKILL / SIGTERM and resume, a kill between
two checkpoint writes, --recipe, --dummy (exact resume: test_exact_resume.py)."""
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torchvision
from conftest import REPO_ROOT, read_jsonl, tiny_run_args

import main
from training import precision
from training.logs import modelzoo_format
from training.checkpoints.checkpoint import torch_load

SMALL = tiny_run_args("--lr", "0.05", "--wd", "1e-4", "--seed", "3")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.smoke
def test_logs_metrics_and_checkpoints(data_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(precision, "native_bf16_feature", lambda: "avx512_bf16")  # --amp: bf16 on any CPU
    for name in precision.ONEDNN_ISA_ENV:
        monkeypatch.delenv(name, raising=False)
    out = str(tmp_path / "out")
    argv = SMALL + ["--data", data_root, "-b", "4", "--epochs", "2", "--steps-per-epoch", "2", "-p", "1",
                    "--model-ema", "0.5", "--bn-recalibrate", "2", "--checkpoint-freq", "1",
                    "--output-dir", out, "--amp"]
    assert main.main(argv) == 0
    stdout = capsys.readouterr().out.splitlines()
    parsed = modelzoo_format.parse_log(stdout)
    steps = [r for r in parsed if r["kind"] == "step"]
    assert [(r["epoch"], r["step"], r["steps"]) for r in steps] == [(0, 0, 2), (0, 1, 2), (1, 0, 2), (1, 1, 2)]
    assert all(r["loss"] > 0 for r in steps)
    fps = [r for r in parsed if r["kind"] == "fps"]
    assert len(fps) == 2 and all(r["fps"] > 0 and r["step_time"] > 0 for r in fps)
    accs = [r for r in parsed if r["kind"] == "acc"]
    # eval after the last epoch and after BN recalibration, each for the model and its EMA
    assert [r["ema"] for r in accs] == [False, True, False, True]
    assert all(0 <= r["acc1"] <= r["acc5"] <= 100 for r in accs)
    if hasattr(torch, "autocast"):
        assert "=> --amp on cpu: bf16 autocast (native bf16 on this CPU: avx512_bf16)" in stdout
    else:  # torch < 1.10 (the 1.8 lane): no CPU autocast
        assert any(line.startswith("=> --amp on cpu: this torch ") for line in stdout)
    assert not any("apex" in line for line in stdout)  # apex never applies on a CPU
    tests = [line for line in stdout if " Test: [" in line]
    assert tests and not any("Epoch:" in line for line in tests)
    assert all(line.startswith("[cpu id: 0 ] ") for line in stdout if modelzoo_format.parse_line(line))

    metrics = read_jsonl(os.path.join(out, "metrics.jsonl"))
    kinds = [r["kind"] for r in metrics]
    assert kinds.count("step") == 4 and kinds.count("epoch") == 2 and kinds.count("eval") == 4
    step = metrics[0]
    assert set(step) == {"kind", "epoch", "step", "steps", "loss", "losses", "lr", "acc1", "acc5", "batch_time",
                         "data_time"}
    assert step["lr"] == pytest.approx(0.05)
    epoch = [r for r in metrics if r["kind"] == "epoch"][-1]
    assert epoch["bad_images"] == 0 and epoch["fps"] == pytest.approx(fps[-1]["fps"], rel=1e-3)
    evals = [r for r in metrics if r["kind"] == "eval"]
    assert [r["ema"] for r in evals] == [False, True, False, True] and all(r["images"] == 6 for r in evals)
    assert evals[2]["acc1"] == pytest.approx(accs[2]["acc1"], abs=1e-3)

    assert sorted(os.listdir(out)) == ["checkpoint.pth.tar", "checkpoint_epoch1.pth.tar",
                                       "checkpoint_epoch2.pth.tar", "metrics.jsonl", "model_best.pth.tar"]
    saved = torch_load(os.path.join(out, "checkpoint.pth.tar"))
    assert saved["epoch"] == 2 and saved["arch"] == "shufflenet_v2_x0_5"
    assert saved["classes"] == ["class_0", "class_1", "class_2"] and saved["args"]["lr"] == 0.05
    assert isinstance(saved["best_acc1"], float) and "model_ema" in saved and "rng" in saved
    net = torchvision.models.shufflenet_v2_x0_5(num_classes=3)
    net.load_state_dict(saved["state_dict"])
    assert torch_load(os.path.join(out, "checkpoint_epoch1.pth.tar"))["epoch"] == 1

    # --evaluate --resume scores exactly the saved (recalibrated) weights, in the same precision as the run's own
    # evaluation (--amp: bf16 autocast, whose rounding differs from fp32 on CPUs with native bf16)
    assert main.main(SMALL + ["--data", data_root, "-b", "4", "--evaluate", "--resume",
                              os.path.join(out, "checkpoint.pth.tar"), "--output-dir", out, "--amp"]) == 0
    again = [r for r in modelzoo_format.parse_log(capsys.readouterr().out.splitlines()) if r["kind"] == "acc"]
    assert again == [accs[2]]


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


@pytest.mark.slow
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
    first = torch_load(ckpt)
    assert 1 <= first["epoch"] < epochs

    # resume, then SIGTERM mid-epoch: exit 130 with a message, checkpoint still good
    process = start(argv + ["--resume", ckpt], out)
    wait_for(lambda: torch_load(ckpt)["epoch"] > first["epoch"], process)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: interrupted by SIGTERM")
    second = torch_load(ckpt)
    assert stderr.strip().splitlines()[-1].endswith("{} is intact after {} epoch(s): continue with --resume {}".format(
        os.path.abspath(ckpt), second["epoch"], os.path.abspath(ckpt))), stderr
    assert "Traceback" not in stderr
    assert first["epoch"] < second["epoch"] < epochs

    # finish the run
    assert main.main(argv + ["--resume", ckpt, "--output-dir", out]) == 0
    assert torch_load(ckpt)["epoch"] == epochs


def test_interrupt_message_says_what_is_on_disk(data_root, tmp_path, capsys, monkeypatch):
    """Before the first checkpoint, Ctrl-C must not claim that a checkpoint is intact."""
    from training import engine

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt()
    monkeypatch.setattr(engine, "train_one_epoch", interrupted)
    out = str(tmp_path / "out")
    assert main.main(SMALL + ["--data", data_root, "-b", "4", "--epochs", "2", "--output-dir", out]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: interrupted by Ctrl-C after "), err
    assert err[0].endswith("no checkpoint was written to {} yet".format(os.path.abspath(out))), err
    assert not os.path.exists(os.path.join(out, "checkpoint.pth.tar"))


@pytest.mark.parametrize("killed_at", [1, 2, 4, 5])
def test_checkpoint_set_stays_consistent_across_a_kill_between_writes(killed_at, data_root, tmp_path, capsys,
                                                                      monkeypatch):
    """A kill between two checkpoint writes, then a resume: every numbered copy gets written, and model_best is
    the best evaluated epoch (they once came after the rolling checkpoint and were lost for good)."""
    from training.checkpoints import checkpoint as ckpt_module
    real_save, calls = ckpt_module.atomic_save, []

    def killed_save(obj, path):
        calls.append(os.path.basename(path))
        if len(calls) == killed_at:
            raise KeyboardInterrupt()  # the process dies here: before this file is written
        real_save(obj, path)
    out = str(tmp_path / "out")
    rolling = os.path.join(out, "checkpoint.pth.tar")
    argv = SMALL + ["--data", data_root, "-b", "4", "--epochs", "2", "--steps-per-epoch", "1", "-p", "100",
                    "--eval-freq", "1", "--checkpoint-freq", "1", "--output-dir", out]
    monkeypatch.setattr(ckpt_module, "atomic_save", killed_save)
    assert main.main(argv) == 130
    monkeypatch.setattr(ckpt_module, "atomic_save", real_save)
    resume = ["--resume", rolling] if os.path.exists(rolling) else []
    assert main.main(argv + resume) == 0
    acc_of_epoch = {}
    for record in read_jsonl(os.path.join(out, "metrics.jsonl")):
        if record["kind"] == "eval":
            acc_of_epoch[record["epoch"]] = record["acc1"]  # an epoch trained again: its last evaluation
    best_acc = max(acc_of_epoch.values())
    kept = [name for name in os.listdir(out) if name.startswith("previous-")]  # a fresh restart keeps the killed run's
    assert len(kept) == (0 if resume else 1)
    assert sorted(set(os.listdir(out)) - set(kept)) == ["checkpoint.pth.tar", "checkpoint_epoch1.pth.tar",
                                                        "checkpoint_epoch2.pth.tar", "metrics.jsonl"] + (
        ["model_best.pth.tar"] if best_acc > 0 else [])
    final = torch_load(rolling)
    assert final["epoch"] == 2 and final["best_acc1"] == best_acc
    assert [torch_load(os.path.join(out, "checkpoint_epoch{}.pth.tar".format(e)))["epoch"] for e in (1, 2)] == [1, 2]
    if best_acc > 0:
        best = torch_load(os.path.join(out, "model_best.pth.tar"))
        assert best["best_acc1"] == best_acc
        assert best["epoch"] == 1 + min(e for e, acc in acc_of_epoch.items() if acc == best_acc)
    capsys.readouterr()


def test_stale_temp_files_are_removed_at_start(data_root, tmp_path, monkeypatch):
    """files.remove_stale_temps (the safe-loading branch) runs once in --output-dir before anything is written."""
    from training.checkpoints import files
    seen = []
    monkeypatch.setattr(files, "remove_stale_temps", lambda folder: seen.append(
        (folder, os.path.exists(os.path.join(folder, "checkpoint.pth.tar")))) or 0, raising=False)
    out = str(tmp_path / "out")
    assert main.main(SMALL + ["--data", data_root, "-b", "4", "--epochs", "1", "--steps-per-epoch", "1",
                              "--output-dir", out]) == 0
    assert seen == [(out, False)]


def test_recipe_paper_without_a_launcher(tmp_path, capsys):
    """`main.py --recipe paper`: the recipe's values under explicit flags, recorded in the checkpoint."""
    from training import recipes
    out = str(tmp_path / "out")
    assert main.main(["--recipe", "paper", "--dummy", "-a", "shufflenet_v2_x0_5", "-b", "4", "--epochs", "1",
                      "--steps-per-epoch", "2", "--train-crop-size", "32", "--val-crop-size", "32", "-j", "0",
                      "--num-classes", "3", "--bn-recalibrate", "1", "--device", "cpu", "--output-dir", out]) == 0
    assert "=> BatchNorm statistics recomputed over 1 batches" in capsys.readouterr().out
    saved = torch_load(os.path.join(out, "checkpoint.pth.tar"))["args"]
    paper = recipes.defaults("paper")
    assert saved["recipe"] == "paper"
    assert (saved["batch_size"], saved["epochs"], saved["bn_recalibrate"]) == (4, 1, 1)  # explicit flags win
    for key in ("lr", "momentum", "weight_decay", "lr_schedule", "norm_weight_decay", "bias_weight_decay",
                "label_smoothing", "color_jitter", "warm_up_epochs"):
        assert saved[key] == paper[key], key


def test_dummy_run_skips_the_meaningless_validation(tmp_path, capsys):
    """--dummy: no `Test:` lines, no Acc@1 and no eval record, but the FPS line and a checkpoint; the performance
    launcher's summary (FPS and last step loss) still reads the log."""
    out = str(tmp_path / "out")
    argv = ["--dummy", "-a", "shufflenet_v2_x0_5", "-b", "4", "--epochs", "2", "--steps-per-epoch", "2",
            "--train-crop-size", "32", "--val-crop-size", "32", "-j", "0", "--num-classes", "3", "--eval-freq", "1",
            "--bn-recalibrate", "1", "--device", "cpu", "--seed", "1", "--output-dir", out]
    assert main.main(argv) == 0
    stdout = capsys.readouterr().out.splitlines()
    assert "=> --dummy: synthetic data, 2 steps per epoch, validation skipped (its accuracy would mean nothing)" \
        in stdout
    assert not any(" Test: [" in line or "-ACC]" in line for line in stdout)
    kinds = [r["kind"] for r in modelzoo_format.parse_log(stdout)]
    assert "acc" not in kinds and kinds.count("fps") == 2 and kinds.count("step") >= 2
    assert [r["kind"] for r in read_jsonl(os.path.join(out, "metrics.jsonl"))].count("eval") == 0
    assert torch_load(os.path.join(out, "checkpoint.pth.tar"))["epoch"] == 2
    from tools import modelzoo_summary
    summary = dict(modelzoo_summary.summarize(stdout, network="Net", rank_size=1, batch_size=4, mode="perf",
                                                   e2e_seconds=1.0))
    assert float(summary["ActualFPS"]) > 0 and "TrainAccuracy" not in summary


def test_step_lines_and_records_carry_lr_eta_and_every_step_loss(data_root, tmp_path, capsys):
    """Print points at steps 0 and 3 of 4: `losses` holds 1 then 3 losses (one per step), whose mean over the
    epoch is the epoch record's loss; the step lines end with the record's LR and an ETA that reaches 0."""
    out = str(tmp_path / "out")
    argv = SMALL + ["--data", data_root, "-b", "2", "--epochs", "2", "--steps-per-epoch", "4", "-p", "3",
                    "--warm_up_epochs", "1", "--eval-freq", "100", "--output-dir", out]
    assert main.main(argv) == 0
    stdout = capsys.readouterr().out.splitlines()
    lines = [modelzoo_format.parse_line(line) for line in stdout if " Epoch: [" in line]
    steps = [r for r in read_jsonl(os.path.join(out, "metrics.jsonl")) if r["kind"] == "step"]
    epochs = [r for r in read_jsonl(os.path.join(out, "metrics.jsonl")) if r["kind"] == "epoch"]
    assert [(r["epoch"], r["step"], len(r["losses"])) for r in steps] == [(0, 0, 1), (0, 3, 3), (1, 0, 1),
                                                                             (1, 3, 3)]
    for line, record in zip(lines, steps):
        assert line["loss"] == pytest.approx(record["losses"][-1], rel=1e-4)  # the printed value of this step
        assert line["lr"] == pytest.approx(record["lr"], rel=1e-4)
        assert 0 <= line["eta_epoch"] <= line["eta_run"]
    # warm-up over the 4 steps of epoch 0, then cosine over the 4 of epoch 1
    assert [r["lr"] for r in steps] == pytest.approx([0.05 / 4, 0.05, 0.05,
                                                      0.05 * 0.5 * (1 + math.cos(math.pi * 3 / 4))], abs=1e-12)
    assert lines[-1]["eta_epoch"] == lines[-1]["eta_run"] == 0 and lines[1]["eta_epoch"] == 0
    for epoch in (0, 1):
        losses = [loss for r in steps if r["epoch"] == epoch for loss in r["losses"]]
        assert epochs[epoch]["loss"] == pytest.approx(sum(losses) / 4, rel=1e-6)
