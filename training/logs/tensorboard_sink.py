"""`--tensorboard DIR`: the metrics.jsonl records, also written as TensorBoard scalars (rank 0 only).

    writer = open_tensorboard(log_dir)   # UserError when the tensorboard package is missing
    sink = TensorboardSink(writer)
    sink.write(record)                   # each record given to metrics.jsonl
    sink.close()

Tags and x values (record kinds as in docs/architecture.md, "Logs"):
- step records: train/loss, train/lr, train/acc1, train/acc5 at global step epoch * steps + step; when the record
  has `losses`, train/loss gets each of them at its own step instead of the one `loss`;
- epoch records: epoch/loss (mean train loss), epoch/lr, epoch/fps at x = epoch;
- eval records: val/acc1, val/acc5, val/loss at x = epoch, or val_ema/... for the EMA model's (`"ema": true`).
A value that is missing or not a number is left out. Epoch and eval records are flushed at once, so a crash loses
at most the step scalars since the last epoch.
"""
import importlib.util

from training.errors import UserError
from training.logs.records import global_step, step_losses

INSTALL_HINT = "--tensorboard needs the tensorboard package: pip install tensorboard"

STEP_TAGS = (("lr", "train/lr"), ("acc1", "train/acc1"), ("acc5", "train/acc5"))
EPOCH_TAGS = (("loss", "epoch/loss"), ("lr", "epoch/lr"), ("fps", "epoch/fps"))
EVAL_KEYS = ("acc1", "acc5", "loss")


def summary_writer_class():
    """torch.utils.tensorboard.SummaryWriter; UserError when the tensorboard package is missing or unusable (main.py
    calls this before anything is written, so a missing package stops the run at once)."""
    if importlib.util.find_spec("tensorboard") is None:
        raise UserError(INSTALL_HINT)
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # installed but unusable: older than torch accepts, or a dependency missing
        raise UserError("--tensorboard: torch.utils.tensorboard cannot be imported: {}".format(exc)) from None
    return SummaryWriter


def open_tensorboard(log_dir):
    """torch.utils.tensorboard.SummaryWriter writing event files into `log_dir` (created when missing)."""
    SummaryWriter = summary_writer_class()
    try:
        return SummaryWriter(log_dir=log_dir)
    except OSError as exc:
        raise UserError("cannot write --tensorboard folder {}: {}".format(log_dir, exc.strerror or exc)) from None


def _scalar(value):
    """float(value), or None for a missing value or one that is not a number (a NaN stays: TensorBoard shows it)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class TensorboardSink:
    """Writes each metrics.jsonl record to a SummaryWriter (or anything with add_scalar / flush / close)."""

    def __init__(self, writer):
        self.writer = writer

    def _add(self, tag, value, step):
        value = _scalar(value)
        if value is not None:
            self.writer.add_scalar(tag, value, global_step=step)

    def write(self, record):
        kind = record.get("kind")
        if kind == "step":
            self._write_step(record)
        elif kind == "epoch":
            self._write_per_epoch(record, EPOCH_TAGS)
        elif kind == "eval":
            prefix = "val_ema/" if record.get("ema") else "val/"
            self._write_per_epoch(record, [(key, prefix + key) for key in EVAL_KEYS])

    def _write_step(self, record):
        for step, loss in step_losses(record):
            self._add("train/loss", loss, step)
        step = global_step(record)
        for key, tag in STEP_TAGS:
            self._add(tag, record.get(key), step)

    def _write_per_epoch(self, record, tags):
        epoch = record.get("epoch")
        if epoch is None:
            return
        for key, tag in tags:
            self._add(tag, record.get(key), int(epoch))
        self.writer.flush()

    def close(self):
        self.writer.close()
