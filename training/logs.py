"""Where logs are written: the ModelZoo lines on stdout (`Logger`) and metrics.jsonl (`MetricsWriter`), rank 0 only.

The line formats themselves (and their parsers, used by tools/) are in training/modelzoo_log.py.
"""
import json
import os

from training import modelzoo_log as zlog


class Logger:
    """Rank 0 prints ModelZoo lines with the `[dev id: N ]` head; other ranks stay quiet."""

    def __init__(self, device_type, device_id, enabled=True):
        self.head = zlog.prefix(device_type, device_id)
        self.enabled = enabled

    def __call__(self, line):
        if self.enabled:
            print(line, flush=True)


class MetricsWriter:
    """metrics.jsonl: one JSON object per line, flushed at once (rank 0 only; other ranks get enabled=False).
    `append=False` starts the file afresh (a new run), True adds to it (resume, --evaluate)."""

    def __init__(self, path, enabled=True, append=True):
        self.path = path
        self.enabled = enabled and path is not None
        if self.enabled:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            if not append:
                open(path, "w").close()

    def write(self, record):
        if self.enabled:
            with open(self.path, "a") as stream:
                stream.write(json.dumps(record, sort_keys=True) + "\n")
