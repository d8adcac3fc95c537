"""A resumed run marks the resume in metrics.jsonl (issue 10, item 9), and tools/plot_log.py then draws each
epoch once: the records of epochs >= the marker's written before it belong to the run that was cut short."""
import json
import os
import sys

import pytest

import main
from tests.datasets import make_image_folder

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import plot_log  # noqa: E402

SMALL = ["-a", "shufflenet_v2_x0_5", "-j", "0", "--train-crop-size", "32", "--val-resize-size", "32",
         "--val-crop-size", "32", "--device", "cpu", "--lr", "0.05", "--seed", "3", "-b", "2", "-p", "1"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_image_folder(str(tmp_path_factory.mktemp("marker") / "data"), classes=2, train_per_class=2,
                             val_per_class=1, size=(36, 36))


def read(path):
    with open(path) as stream:
        return [json.loads(line) for line in stream]


def test_a_resume_is_marked_and_plots_count_each_epoch_once(data_root, tmp_path, one_thread):
    out = str(tmp_path / "out")
    argv = SMALL + ["--data", data_root, "--epochs", "2", "--checkpoint-freq", "1", "--output-dir", out]
    assert main.main(argv) == 0
    # as after a kill during epoch 1 with the rolling checkpoint of epoch 1 on disk: epoch 1 runs again
    assert main.main(argv + ["--resume", os.path.join(out, "checkpoint_epoch1.pth.tar")]) == 0
    records = read(os.path.join(out, "metrics.jsonl"))
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
    assert "resume" not in [r["kind"] for r in read(os.path.join(out, "metrics.jsonl"))]


def test_plot_log_drops_what_a_resume_trains_again(tmp_path):
    def epoch(e, fps):
        return [{"kind": "step", "epoch": e, "step": s, "steps": 2, "loss": fps + s, "lr": 0.1} for s in (0, 1)] + [
            {"kind": "epoch", "epoch": e, "fps": fps, "loss": 1.0, "lr": 0.1},
            {"kind": "eval", "epoch": e, "acc1": fps / 10.0, "acc5": 50.0, "loss": 1.0, "ema": False}]
    lines = epoch(0, 100.0) + epoch(1, 110.0) + epoch(2, 120.0)[:1]  # killed in epoch 2, resumed from epoch 1
    lines += [{"kind": "resume", "epoch": 1}] + epoch(1, 210.0) + epoch(2, 220.0)
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    curves = plot_log.read_log(str(path))
    assert {e: figures["fps"] for e, figures in curves.epochs.items()} == {0: 100.0, 1: 210.0, 2: 220.0}
    assert [(e[0], e[1]) for e in curves.evals] == [(0, 10.0), (1, 21.0), (2, 22.0)]
    assert [(x, loss) for x, loss, _ in curves.steps] == [(0.0, 100.0), (0.5, 101.0), (1.0, 210.0), (1.5, 211.0),
                                                         (2.0, 220.0), (2.5, 221.0)]
