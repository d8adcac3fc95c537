"""Where logs are written: the ModelZoo lines on stdout (`Logger`) and metrics.jsonl (`MetricsWriter`), rank 0 only.

The line formats themselves (and their parsers, used by tools/) are in training/logs/modelzoo_format.py.
"""
import json
import os

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
    """metrics.jsonl: one JSON object per line, flushed at once (rank 0 only; other ranks get enabled=False).
    `append=False` starts the file afresh (a new run), True adds to it (resume, --evaluate). With `tensorboard=DIR`
    every record also goes to TensorBoard event files in DIR (training/logs/tensorboard_sink.py). A context manager:
    leaving it (at the end or on an error) closes the event file."""

    def __init__(self, path, enabled=True, append=True, tensorboard=None):
        self.path = path
        self.enabled = enabled and path is not None
        self.sink = None
        if self.enabled:
            if tensorboard:  # first: a missing package or a bad folder stops before metrics.jsonl is touched
                self.sink = TensorboardSink(open_tensorboard(tensorboard))
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            if not append:
                open(path, "w").close()

    def write(self, record):
        if self.enabled:
            with open(self.path, "a") as stream:
                stream.write(json.dumps(record, sort_keys=True) + "\n")
            if self.sink is not None:
                self.sink.write(record)

    def close(self):
        if self.sink is not None:
            self.sink.close()
            self.sink = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False
