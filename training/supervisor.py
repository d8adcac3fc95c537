"""Runs a set of processes as one job (STUB with the agreed API; the launcher branch owns the real module).

`supervise(specs)` starts every ProcessSpec, waits, and when one exits non-zero stops the others (SIGTERM, SIGKILL
after `grace_seconds`) and prints one line `error: process R of W exited with code C: <its last error line>`.
Ctrl-C / SIGTERM of the supervisor are passed on to the processes. Children die with the supervisor on Linux
(PR_SET_PDEATHSIG).
"""
import collections
import ctypes
import signal
import subprocess
import sys
import threading
import time

from training.errors import EXIT_INTERRUPTED

ProcessSpec = collections.namedtuple("ProcessSpec", "argv env log_path cpus")
ProcessSpec.__new__.__defaults__ = (None, None)


def _die_with_parent():
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _Child:
    def __init__(self, spec):
        self.last_error = ""
        self.log = open(spec.log_path, "a") if spec.log_path else None
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        self.process = subprocess.Popen(spec.argv, env=spec.env, stdout=self.log, stderr=subprocess.PIPE,
                                        universal_newlines=True, preexec_fn=preexec)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stderr:
            if line.startswith("error: "):
                self.last_error = line.strip()[len("error: "):]
            else:
                (self.log or sys.stderr).write(line)
                (self.log or sys.stderr).flush()


def _stop(children, grace_seconds):
    for child in children:
        if child.process.poll() is None:
            child.process.terminate()
    deadline = time.time() + grace_seconds
    for child in children:
        try:
            child.process.wait(max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def supervise(specs, grace_seconds=20.0):
    """Run `specs` to the end; returns the exit code to use (0, the failed process's code, or 130 on Ctrl-C)."""
    children = [_Child(spec) for spec in specs]
    try:
        while True:
            codes = [child.process.poll() for child in children]
            failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                child = children[failed[0]]
                _stop(children, grace_seconds)
                child.reader.join(5)
                if codes[failed[0]] in (EXIT_INTERRUPTED, -signal.SIGINT, -signal.SIGTERM):
                    return EXIT_INTERRUPTED
                print("error: process {} of {} exited with code {}: {}".format(
                    failed[0], len(children), codes[failed[0]], child.last_error or "(no error line)"),
                    file=sys.stderr, flush=True)
                return codes[failed[0]] if codes[failed[0]] > 0 else 1
            if all(code == 0 for code in codes):
                return 0
            time.sleep(0.1)
    except KeyboardInterrupt:
        _stop(children, grace_seconds)
        return EXIT_INTERRUPTED
    finally:
        for child in children:
            child.reader.join(5)
            if child.log:
                child.log.close()
