"""main.py --tensorboard DIR end to end: the event file holds metrics.jsonl's numbers (read back with TensorBoard's
own EventAccumulator), a missing package stops the run before anything is written, and the file is closed on an
error too."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, tiny_run_args

import main
from tests.test_tensorboard_sink import read_scalars
from training.logs.tensorboard_sink import INSTALL_HINT

pytestmark = pytest.mark.usefixtures("one_thread")
needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="tensorboard (requirements-dev.txt) is not installed for this Python; "
                                              "test_missing_package_stops_before_anything_is_written covers it")

SMALL = tiny_run_args("--lr", "0.05", "--seed", "5", "-b", "4", workers=2)


def expected_scalars(path):
    """{tag: [(x, value)]} written out from metrics.jsonl by hand (the mapping of docs/architecture.md)."""
    expected = {}

    def add(tag, x, value):
        expected.setdefault(tag, []).append((x, value))
    with open(path) as stream:
        for record in map(json.loads, stream):
            if record["kind"] == "step":
                last = record["epoch"] * record["steps"] + record["step"]
                for offset, loss in enumerate(record["losses"]):
                    add("train/loss", last - len(record["losses"]) + 1 + offset, loss)
                for key in ("lr", "acc1", "acc5"):
                    add("train/" + key, last, record[key])
            elif record["kind"] == "epoch":
                for key in ("loss", "lr", "fps"):
                    add("epoch/" + key, record["epoch"], record[key])
            elif record["kind"] == "eval":
                for key in ("acc1", "acc5", "loss"):
                    add(("val_ema/" if record["ema"] else "val/") + key, record["epoch"], record[key])
    return expected


@needs_tensorboard
def test_event_file_scalars_equal_metrics_jsonl(data_root, tmp_path, capsys):
    out, board = str(tmp_path / "out"), str(tmp_path / "board")
    assert main.main(SMALL + ["--data", data_root, "--epochs", "2", "--steps-per-epoch", "3", "-p", "2",
                              "--eval-freq", "1", "--model-ema", "0.5", "--output-dir", out,
                              "--tensorboard", board]) == 0
    capsys.readouterr()
    expected = expected_scalars(os.path.join(out, "metrics.jsonl"))
    assert len(expected["train/loss"]) == 6 and len(expected["val_ema/acc1"]) == 2
    scalars = read_scalars(board)
    assert sorted(scalars) == sorted(expected)
    for tag, points in expected.items():
        assert [x for x, _ in scalars[tag]] == [x for x, _ in points], tag
        assert [v for _, v in scalars[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag  # float32


@needs_tensorboard
def test_event_file_is_closed_when_the_run_fails(data_root, tmp_path, capsys, monkeypatch):
    from training import engine
    from training.logs import tensorboard_sink
    closed = []
    real_close = tensorboard_sink.TensorboardSink.close
    monkeypatch.setattr(tensorboard_sink.TensorboardSink, "close", lambda self: closed.append(1) or real_close(self))
    real_train = engine.train_one_epoch

    def fail_in_epoch_1(*args, **kwargs):
        if kwargs["epoch"] == 1:
            raise KeyboardInterrupt()
        return real_train(*args, **kwargs)
    monkeypatch.setattr(engine, "train_one_epoch", fail_in_epoch_1)
    board = str(tmp_path / "board")
    assert main.main(SMALL + ["--data", data_root, "--epochs", "3", "--steps-per-epoch", "1", "-j", "0",
                              "--eval-freq", "1", "--output-dir", str(tmp_path / "out"), "--tensorboard", board]) == 130
    capsys.readouterr()
    assert closed == [1]
    scalars = read_scalars(board)
    assert [x for x, _ in scalars["val/acc1"]] == [0] and [x for x, _ in scalars["train/loss"]] == [0]


BLOCKED = """
import sys
sys.modules["tensorboard"] = None  # as if the package were not installed
import main
sys.exit(main.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_missing_package_stops_before_anything_is_written(tmp_path):
    out, board = tmp_path / "out", tmp_path / "board"
    done = subprocess.run([sys.executable, "-c", BLOCKED, "--dummy", "--device", "cpu", "--output-dir", str(out),
                           "--tensorboard", str(board)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr == "error: {}\n".format(INSTALL_HINT)
    assert not out.exists() and not board.exists()


def test_other_ranks_write_no_event_file(tmp_path):
    from training.logs.writers import MetricsWriter
    board = tmp_path / "board"
    with MetricsWriter(str(tmp_path / "metrics.jsonl"), enabled=False, tensorboard=str(board)) as metrics:
        metrics.write({"kind": "epoch", "epoch": 0, "fps": 1.0})
    assert not board.exists() and not (tmp_path / "metrics.jsonl").exists()
