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
A value that is missing or not a number is left out.

The event file is written by EventFile, in this process: each record's scalars are appended in one write
(training/checkpoints/files.py append_bytes), so a crash loses nothing already written and a failed write (full
disk, read-only file system) is one UserError naming the file. (torch's SummaryWriter writes from a background
thread; with tensorboard <= 2.11, the newest for Python 3.7, a failed write there stops that thread and the run
then hangs forever on the writer's full queue.)
"""
import importlib.util
import io
import os
import socket
import time

from training.checkpoints import files
from training.errors import UserError
from training.logs.records import global_step, step_losses

INSTALL_HINT = "--tensorboard needs the tensorboard package: pip install tensorboard"

STEP_TAGS = (("lr", "train/lr"), ("acc1", "train/acc1"), ("acc5", "train/acc5"))
EPOCH_TAGS = (("loss", "epoch/loss"), ("lr", "epoch/lr"), ("fps", "epoch/fps"))
EVAL_KEYS = ("acc1", "acc5", "loss")
FILE_VERSION = "brain.Event:2"  # the first event of every event file, as TensorBoard's own writers put it


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
    """An EventFile writing into `log_dir` (created when missing)."""
    summary_writer_class()
    try:
        os.makedirs(log_dir, exist_ok=True)
    except OSError as exc:
        raise UserError("cannot write --tensorboard folder {}: {}".format(log_dir, files.os_error_reason(exc))) \
            from None
    return EventFile(log_dir)


class EventFile:
    """A TensorBoard event file (`events.out.tfevents.<time>.<host>.<pid>.<n>` in `log_dir`) written in this
    process: add_scalar() collects events in memory, flush() appends them in one write; the writer interface
    TensorboardSink uses (add_scalar, flush, close)."""

    def __init__(self, log_dir):
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter
        from torch.utils.tensorboard.summary import scalar

        self.log_dir = log_dir
        self.path = os.path.join(log_dir, "events.out.tfevents.{:010d}.{}.{}.{}".format(
            int(time.time()), socket.gethostname(), os.getpid(), id(self)))
        self._event_class, self._scalar_summary = event_pb2.Event, scalar
        self._pending = io.BytesIO()
        self._records = RecordWriter(self._pending)  # TensorBoard's own record framing (length, CRCs) into memory
        self._add(self._event_class(wall_time=time.time(), file_version=FILE_VERSION))
        self.flush()

    def _add(self, event):
        self._records.write(event.SerializeToString())

    def add_scalar(self, tag, value, global_step=0):
        self._add(self._event_class(wall_time=time.time(), step=int(global_step),
                                    summary=self._scalar_summary(tag, float(value))))

    def flush(self):
        """Append the events collected since the last flush (UserError naming the file when the write fails)."""
        data = self._pending.getvalue()
        if data:
            self._pending.seek(0)
            self._pending.truncate()
            files.append_bytes(self.path, data)

    def close(self):
        self.flush()


def _scalar(value):
    """float(value), or None for a missing value or one that is not a number (a NaN stays: TensorBoard shows it)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class TensorboardSink:
    """Writes each metrics.jsonl record to an EventFile (or anything with add_scalar / flush / close), each record's
    scalars flushed together."""

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
        self.writer.flush()

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

    def close(self):
        self.writer.close()
