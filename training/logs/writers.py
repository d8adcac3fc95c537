"""Where logs are written: the ModelZoo lines on stdout (`Logger`) and metrics.jsonl (`MetricsWriter`), rank 0 only.

The line formats themselves (and their parsers, used by tools/) are in training/logs/modelzoo_format.py.
"""
import json
import os

from training.checkpoints import files
from training.errors import UserError
from training.logs import modelzoo_format
from training.logs.tensorboard_sink import TensorboardSink, open_tensorboard


class Logger:
    """Rank 0 prints ModelZoo lines with the `[dev id: N ]` head; other ranks stay quiet."""

    def __init__(self, device_type, device_id, enabled=True):
        self.head = modelzoo_format.prefix(device_type, device_id)
        self.enabled = enabled

    def __call__(self, line):
        if self.enabled:
            print(line, flush=True)


class MetricsWriter:
    """metrics.jsonl: one JSON object per line, each line added whole in one write (rank 0 only; other ranks get
    enabled=False). `append=False` starts a new file (main.py moves a previous run's file aside first), True adds to
    it (resume, --evaluate) after cutting off a partial last line that a killed write left, with one line through
    `log` saying so. With `tensorboard=DIR` every record also goes to TensorBoard event files in DIR
    (training/logs/tensorboard_sink.py). A write that fails (full disk, read-only file system) is a UserError naming
    the file and the reason. A context manager: leaving it (at the end or on an error) closes the event file."""

    def __init__(self, path, enabled=True, append=True, tensorboard=None, log=None):
        self.path = path
        self.enabled = enabled and path is not None
        self.sink = None
        if self.enabled:
            if tensorboard:  # first: a missing package or a bad folder stops before metrics.jsonl is touched
                self.sink = TensorboardSink(open_tensorboard(tensorboard))
            files.make_folder(os.path.dirname(os.path.abspath(path)))
            if not append:
                files.atomic_write(path, lambda stream: None)
            removed = files.repair_last_line(path)
            if removed and log is not None:
                log("=> {}: removed a partial last record ({} bytes) that an interrupted write left".format(
                    path, removed))

    def write(self, record):
        if self.enabled:
            files.append_line(self.path, json.dumps(record, sort_keys=True))
            if self.sink is not None:
                self.sink.write(record)

    def close(self):
        if self.sink is not None:
            sink, self.sink = self.sink, None
            sink.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        try:
            self.close()
        except UserError:
            if exc_type is None:  # else the error already on its way is the one to report
                raise
        return False
