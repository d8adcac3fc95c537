"""main.py: a resumed run marks the resume in metrics.jsonl, and tools/plot_log.py then draws each epoch once (the
records of epochs >= the marker's written before it belong to the run that was cut short); --evaluate and new runs
write no marker."""
import os

from conftest import read_jsonl, tiny_run_args

import main
from tools import plot_log

SMALL = tiny_run_args("--lr", "0.05", "--seed", "3", "-b", "2", "-p", "1")
IMAGE_FOLDER = dict(classes=2, train_per_class=2, val_per_class=1)  # data_root's shape (conftest.py)


def test_a_resume_is_marked_and_plots_count_each_epoch_once(data_root, tmp_path, one_thread):
    out = str(tmp_path / "out")
    argv = SMALL + ["--data", data_root, "--epochs", "2", "--checkpoint-freq", "1", "--output-dir", out]
    assert main.main(argv) == 0
    # as after a kill during epoch 1 with the rolling checkpoint of epoch 1 on disk: epoch 1 runs again
    assert main.main(argv + ["--resume", os.path.join(out, "checkpoint_epoch1.pth.tar")]) == 0
    records = read_jsonl(os.path.join(out, "metrics.jsonl"))
    kinds = [(r["kind"], r["epoch"]) for r in records if r["kind"] in ("epoch", "resume")]
    assert kinds == [("epoch", 0), ("epoch", 1), ("resume", 1), ("epoch", 1)]
    second_run = records[[r["kind"] for r in records].index("resume") + 1:]

    curves = plot_log.read_log(os.path.join(out, "metrics.jsonl"))
    assert sorted(curves.epochs) == [0, 1]
    assert curves.epochs[1]["fps"] == [r for r in second_run if r["kind"] == "epoch"][0]["fps"]
    evals = [r for r in second_run if r["kind"] == "eval"]
    assert [(e[0], e[1]) for e in curves.evals] == [(1, r["acc1"]) for r in evals]  # epoch 1 once, from the resume
    steps = [r for r in records if r["kind"] == "step"]
    assert len(curves.steps) == len(steps) - sum(1 for r in steps if r["epoch"] == 1) // 2


def test_evaluate_and_new_runs_write_no_marker(data_root, tmp_path, one_thread):
    out = str(tmp_path / "out")
    assert main.main(SMALL + ["--data", data_root, "--epochs", "1", "--output-dir", out]) == 0
    assert main.main(SMALL + ["--data", data_root, "--evaluate", "--output-dir", out,
                              "--resume", os.path.join(out, "checkpoint.pth.tar")]) == 0
    assert "resume" not in [r["kind"] for r in read_jsonl(os.path.join(out, "metrics.jsonl"))]
