"""training/logs/tensorboard_sink.py: metrics.jsonl records written as TensorBoard scalars, read back with TensorBoard's
own EventAccumulator; a missing tensorboard package is one error line."""
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from training.errors import UserError
from training.logs.tensorboard_sink import INSTALL_HINT, TensorboardSink, open_tensorboard


RECORDS = [
    {"kind": "step", "epoch": 0, "step": 0, "steps": 8, "loss": 6.9, "lr": 0.1, "acc1": 0.0, "acc5": 1.5,
     "batch_time": 0.2, "data_time": 0.01},
    # per-step losses of steps 1..4 flushed at the print point of step 4
    {"kind": "step", "epoch": 0, "step": 4, "steps": 8, "loss": 6.1, "lr": 0.2, "acc1": 3.0, "acc5": 9.0,
     "losses": [6.7, 6.5, 6.3, 6.1]},
    {"kind": "epoch", "epoch": 0, "fps": 812.5, "step_time": 0.25, "loss": 6.4, "lr": 0.25, "bad_images": 0,
     "seconds": 2.0},
    {"kind": "eval", "epoch": 0, "acc1": 12.5, "acc5": 40.25, "loss": 5.5, "ema": False},
    {"kind": "eval", "epoch": 0, "acc1": 10.0, "acc5": 35.0, "loss": 5.75, "ema": True},
    {"kind": "step", "epoch": 1, "step": 2, "steps": 8, "loss": 5.0, "lr": 0.3, "acc1": 20.0, "acc5": 50.0},
    {"kind": "epoch", "epoch": 1, "fps": 900.0, "loss": None, "lr": 0.3},  # None (an empty epoch's loss) left out
]

EXPECTED = {
    "train/loss": [(0, 6.9), (1, 6.7), (2, 6.5), (3, 6.3), (4, 6.1), (10, 5.0)],
    "train/lr": [(0, 0.1), (4, 0.2), (10, 0.3)],
    "train/acc1": [(0, 0.0), (4, 3.0), (10, 20.0)],
    "train/acc5": [(0, 1.5), (4, 9.0), (10, 50.0)],
    "epoch/loss": [(0, 6.4)],
    "epoch/lr": [(0, 0.25), (1, 0.3)],
    "epoch/fps": [(0, 812.5), (1, 900.0)],
    "val/acc1": [(0, 12.5)], "val/acc5": [(0, 40.25)], "val/loss": [(0, 5.5)],
    "val_ema/acc1": [(0, 10.0)], "val_ema/acc5": [(0, 35.0)], "val_ema/loss": [(0, 5.75)],
}


def read_scalars(log_dir):
    """{tag: [(step, value)]} of every scalar in the event files of `log_dir`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(log_dir)
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def test_sink_writes_the_records_numbers_at_their_steps(tmp_path):
    log_dir = str(tmp_path / "tb")
    sink = TensorboardSink(open_tensorboard(log_dir))
    for record in RECORDS:
        sink.write(record)
    sink.close()
    scalars = read_scalars(log_dir)
    assert sorted(scalars) == sorted(EXPECTED)
    for tag, points in EXPECTED.items():
        assert [step for step, _ in scalars[tag]] == [step for step, _ in points], tag
        # event files store float32
        assert [value for _, value in scalars[tag]] == pytest.approx([value for _, value in points], rel=1e-6), tag


def test_epoch_and_eval_scalars_are_on_disk_before_close(tmp_path):
    """A run killed after an evaluation still has that evaluation in its event file."""
    log_dir = str(tmp_path / "tb")
    sink = TensorboardSink(open_tensorboard(log_dir))
    for record in RECORDS[:5]:
        sink.write(record)
    scalars = read_scalars(log_dir)
    assert scalars["val/acc1"] == [(0, 12.5)] and scalars["val_ema/acc5"] == [(0, 35.0)]
    assert scalars["epoch/fps"] == [(0, 812.5)]
    sink.close()


def test_unwritable_folder_is_one_error_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot write --tensorboard folder"):
        open_tensorboard(str(blocker / "tb"))


BLOCKED_IMPORT = """
import sys
sys.modules["tensorboard"] = None  # as if the package were not installed
from training.errors import run_cli
from training.logs.tensorboard_sink import open_tensorboard
sys.exit(run_cli(lambda argv: open_tensorboard(sys.argv[1])))
"""


def test_missing_tensorboard_package_is_one_error_line(tmp_path):
    log_dir = tmp_path / "tb"
    done = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT, str(log_dir)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr == "error: {}\n".format(INSTALL_HINT)
    assert INSTALL_HINT == "--tensorboard needs the tensorboard package: pip install tensorboard"
    assert not log_dir.exists()
