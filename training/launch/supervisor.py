"""Run a group of processes as one job: one fails, all stop; the supervisor dies, they die.

Used by the ModelZoo launcher (training/launch/modelzoo.py, one main.py per rank) and by main.py's spawn path.

- `supervise(specs, grace_seconds=20.0)` starts one process per `ProcessSpec`, each in its own process group (so
  the final SIGKILL reaches its data loader workers too), with its output in `log_path` (or on this process's
  stdout/stderr), its CPU affinity set to `cpus`. When one exits non-zero, the others get SIGTERM and,
  `grace_seconds` later, SIGKILL; one line goes to stderr: `error: process R of W exited with code C: <R's own error
  line>` (its last `error: ...` line, else the first exception line of its last traceback, torch's `[rankN]: `
  prefixes removed). When that process timed out waiting for the others (a collective or --dist-timeout), the
  line names the processes still running then, the ones that stopped answering: `error: process 1 of 2 stopped
  answering (stopped by a signal, e.g. SIGSTOP); process 0 timed out waiting for it and exited with code 1: ...`.
  A process killed by signal N is reported as such and counts as exit code 128+N, as shells do.
  Ctrl-C / SIGTERM of the supervisor are forwarded the same way and give exit code 130.
- Processes writing to this process's stderr (no `log_path`): their lines are passed on, except their `error:` lines
  (the supervisor reports the one that matters once) and their tracebacks.
- Children die with the supervisor even when it is SIGKILLed: on Linux through PR_SET_PDEATHSIG (set in the child
  before exec), elsewhere through a small watchdog process that kills them once the supervisor is gone.

torch's own machinery (torch.distributed.elastic.multiprocessing.start_processes, behind torchrun) is not used:
its signature changed across torch 1.9 .. 2.x (log_dir/redirects, then LogsSpecs), it writes logs to its own
`<log_dir>/attempt_N/<rank>/` layout instead of the ModelZoo paths, starts children in new sessions without a
parent-death signal (they outlive a SIGKILLed torchrun), binds no CPUs per rank, and torch 1.8 lacks it entirely.
"""
import collections
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time

from training.errors import EXIT_INTERRUPTED

ProcessSpec = collections.namedtuple("ProcessSpec", "argv env log_path cpus", defaults=(None, None))
ProcessSpec.__doc__ = """One process: `argv` (list), `env` (full environment dict, None: inherit), `log_path` (file that
receives stdout and stderr; None: this process's stdout/stderr), `cpus` (CPU ids to bind it to; None: no binding)."""

POLL_SECONDS = 0.1
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
SETTLE_SECONDS = 1.0  # after a first failure, how long the others may take to fail too before one is reported
# Last-line candidates, best first: our own `error: ...` lines, then a traceback's closing `SomeError: ...` line.
_ERROR_LINE = re.compile(r"^error: ")
_EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception|Interrupt)\b.*")
_RANK_PREFIX = re.compile(r"^\[(?:rank|Rank )?\d+\]:\s?")  # torch >= 2.2 prefixes a rank's traceback lines
_TRACEBACK_START = "Traceback (most recent call last):"
_CHAIN_LINES = ("During handling of the above exception, another exception occurred:",
                "The above exception was the direct cause of the following exception:")
_SOURCE_PLACE = re.compile(r"\[[^\]\s]+\.(?:cc|cpp|h|hpp):\d+\]\s*")  # torch's C++ file:line in a message
_TIMED_OUT = re.compile(r"timed? ?out|timeout", re.IGNORECASE)
_PEER_GONE = re.compile(r"connection (?:closed|reset) by peer|broken pipe|timed? ?out|timeout", re.IGNORECASE)
_WATCHDOG = """import os, signal, sys, time
parent, groups = int(sys.argv[1]), [int(pid) for pid in sys.argv[2:]]
while os.getppid() == parent:
    time.sleep(0.5)
for sig in (signal.SIGTERM, signal.SIGKILL):
    for group in groups:
        try:
            os.killpg(group, sig)
        except OSError:
            pass
    time.sleep(5)
"""


def threads_per_process(processes, cores=None):
    """Compute threads for each of `processes` processes sharing this node's cores (at least 1)."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, processes))


def cpu_share(index, processes, cores=None):
    """The CPU ids of process `index` of `processes` when the node's cores are split evenly (nproc/N each)."""
    count = threads_per_process(processes, cores)
    return list(range(index * count, index * count + count))


def parent_death_signal_available():
    return sys.platform.startswith("linux") and _libc() is not None


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


class _ChildSetup:
    """Runs in the child between fork and exec: own process group, die with the parent, CPU binding."""

    def __init__(self, parent_pid, cpus, parent_death_signal):
        self.parent_pid = parent_pid
        self.cpus = cpus
        self.parent_death_signal = parent_death_signal

    def __call__(self):
        os.setpgid(0, 0)
        if self.parent_death_signal:
            _libc().prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            if os.getppid() != self.parent_pid:  # the parent died before prctl took effect
                os._exit(1)
        if self.cpus and hasattr(os, "sched_setaffinity"):
            usable = os.sched_getaffinity(0)
            chosen = [cpu for cpu in self.cpus if cpu in usable]
            if chosen:
                os.sched_setaffinity(0, chosen)


class OutputScanner:
    """Reads a process's output line by line: what to pass on to the terminal (not its tracebacks) and its error
    line (its last `error: ...` line, else the first exception line of its last traceback chain)."""

    def __init__(self):
        self.error = ""
        self._exception = ""
        self._in_traceback = False
        self._after_traceback = False

    def feed(self, line):
        """Take one line of output (with its newline); True when it may be shown on the terminal."""
        body = _RANK_PREFIX.sub("", line.rstrip("\r\n"))
        if _ERROR_LINE.match(body.strip()):
            self.error = body.strip()
            return False
        if body.startswith(_TRACEBACK_START):
            if not self._after_traceback:  # a new chain, not the next exception of the same one
                self._exception = ""
            self._in_traceback, self._after_traceback = True, False
            return False
        if self._in_traceback:
            if body and not body[0].isspace():  # the exception line that closes the traceback
                self._in_traceback, self._after_traceback = False, True
                self._exception = self._exception or _SOURCE_PLACE.sub("", body.strip())
            return False
        if self._after_traceback and (not body.strip() or body.strip() in _CHAIN_LINES):
            return False
        self._after_traceback = False
        if _EXCEPTION_LINE.match(body.strip()) and not self._exception:  # an exception line outside a traceback
            self._exception = body.strip()
        return True

    def error_line(self):
        """The error line without its `error: ` head ("" when there is none)."""
        return _ERROR_LINE.sub("", self.error) if self.error else self._exception


class _Child:
    """A started process and what it last said that looks like an error."""

    def __init__(self, spec, parent_death_signal):
        self.spec = spec
        self.scanner = OutputScanner()
        self._reader = None
        setup = _ChildSetup(os.getpid(), spec.cpus, parent_death_signal)
        if spec.log_path is not None:
            with open(spec.log_path, "ab") as log:
                self.popen = subprocess.Popen(spec.argv, env=spec.env, stdout=log, stderr=subprocess.STDOUT,
                                              preexec_fn=setup)
        else:
            self.popen = subprocess.Popen(spec.argv, env=spec.env, stderr=subprocess.PIPE, preexec_fn=setup)
            self._reader = threading.Thread(target=self._tee_stderr, daemon=True)
            self._reader.start()

    def _tee_stderr(self):
        """Pass the child's stderr on, except its `error:` lines and tracebacks (the supervisor reports the failing
        process's error once)."""
        for raw in iter(self.popen.stderr.readline, b""):
            line = raw.decode("utf-8", "replace")
            if self.scanner.feed(line):
                sys.stderr.write(line)
                sys.stderr.flush()

    def error_line(self):
        """This process's error line (OutputScanner), else the last line of its log; waits (5 s at most) for the
        rest of its piped stderr."""
        if self._reader is not None:
            self._reader.join(5)
        said, last = self._scan()
        return said or last

    def error_so_far(self):
        """The error line found so far, without waiting for more output ("" when none)."""
        return self._scan()[0]

    def _scan(self):
        """(error line, last line of the log): from the piped stderr read so far, or from the whole log file."""
        if self.spec.log_path is None or not os.path.isfile(self.spec.log_path):
            return self.scanner.error_line(), ""
        with open(self.spec.log_path, "rb") as log:
            lines = log.read().decode("utf-8", "replace").splitlines()
        scanner = OutputScanner()
        for line in lines:
            scanner.feed(line)
        last = next((_RANK_PREFIX.sub("", line).strip() for line in reversed(lines) if line.strip()), "")
        return scanner.error_line(), last

    def is_stopped(self):
        """True when the process is stopped (SIGSTOP, SIGTSTP, a debugger); False where /proc cannot tell."""
        try:
            with open("/proc/{}/stat".format(self.popen.pid)) as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
        except (OSError, IndexError):
            return False

    def signal_group(self, sig):
        """`sig` to the process and its own children (data loader workers); False when nothing was there."""
        try:
            os.killpg(self.popen.pid, sig)
            return True
        except OSError:
            return False


class _Signals:
    """Turns SIGINT / SIGTERM into a flag the supervision loop checks (main thread only)."""

    def __init__(self):
        self.received = None
        self._previous = {}

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        self.received = signum


def _start_watchdog(children):
    argv = [sys.executable, "-c", _WATCHDOG, str(os.getpid())] + [str(child.popen.pid) for child in children]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def stop(children, grace_seconds, first_signal=signal.SIGTERM):
    """`first_signal` to every child still running, SIGKILL to those alive after `grace_seconds` (and to whatever is
    left in their process groups), then reap all."""
    for child in children:
        if child.popen.poll() is None:
            child.popen.send_signal(first_signal)  # the process stops its own workers: no noise from them
    deadline = time.monotonic() + grace_seconds
    while any(child.popen.poll() is None for child in children) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    alive = [child for child in children if child.popen.poll() is None]
    if alive:
        print("{} training process(es) still running {:g} s after SIGTERM: killed".format(len(alive), grace_seconds),
              flush=True)
    for child in children:
        child.signal_group(signal.SIGKILL)  # also data loader workers left behind by a rank that exited
        child.popen.wait()


def _wait_for_first_failure(children, signals):
    """None when every child exited 0, the failed child, or 'interrupted'."""
    while True:
        if signals.received is not None:
            return "interrupted"
        codes = [child.popen.poll() for child in children]
        failed = [child for child, code in zip(children, codes) if code not in (None, 0)]
        if failed:
            return failed[0]
        if all(code == 0 for code in codes):
            return None
        time.sleep(POLL_SECONDS)


def supervise(specs, grace_seconds=20.0):
    """Run `specs` (ProcessSpec) to the end; returns the exit code to use: 0, the failed process's code, or 130."""
    signals = _Signals()
    signals.install()
    children, watchdog = [], None
    use_prctl = parent_death_signal_available()
    try:
        for spec in specs:
            children.append(_Child(spec, use_prctl))
        if not use_prctl:
            watchdog = _start_watchdog(children)
        outcome = _wait_for_first_failure(children, signals)
    except BaseException:
        stop(children, grace_seconds)
        raise
    finally:
        signals.restore()
    if outcome == "interrupted":
        print("interrupted: stopping {} training process(es); checkpoints already written stay intact".format(
            sum(child.popen.poll() is None for child in children)), flush=True)
        stop(children, grace_seconds, first_signal=signals.received)
        code = EXIT_INTERRUPTED
    elif outcome is not None:
        failed, silent, stopped = settle(children, outcome)
        stop(children, grace_seconds)
        code = exit_code(failed.popen.returncode)
        print("error: " + failure_line(children, failed, silent, stopped), file=sys.stderr, flush=True)
    else:
        stop(children, grace_seconds)  # reaps nothing new; kills workers a finished rank left behind
        code = 0
    if watchdog is not None:
        watchdog.kill()
        watchdog.wait()
    return code


def exit_code(returncode):
    """A process's exit status as a shell gives it: its code, or 128+N when signal N killed it."""
    return 128 - returncode if returncode < 0 else returncode


def settle(children, first):
    """(the failed process to report, the processes that stopped answering, whether all of those are stopped by a
    signal) once the others had SETTLE_SECONDS to fail as well: an error of a process's own wins over another's
    lost connection or timeout (which follow from it); when the reported one timed out, the processes still
    running are the ones it waited for."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline and any(child.popen.poll() is None for child in children):
        time.sleep(POLL_SECONDS)
    failed = [child for child in children if child.popen.poll() not in (None, 0)] or [first]
    causes = [child for child in failed if not _PEER_GONE.search(child.error_so_far())]
    reported = first if first in causes or not causes else causes[0]
    silent = []
    if _TIMED_OUT.search(reported.error_so_far()):
        silent = [child for child in children if child.popen.poll() is None]
    return reported, silent, bool(silent) and all(child.is_stopped() for child in silent)


def failure_line(children, failed, silent, stopped):
    """The one line (without `error: `) that reports the run's failure."""
    world = len(children)
    returncode = failed.popen.returncode
    if returncode < 0:
        how = "was killed by {} (exit code {})".format(_signal_name(-returncode), exit_code(returncode))
    else:
        how = "exited with code {}".format(returncode)
    said = failed.error_line() or "no error line in its output"
    if not silent:
        return "process {} of {} {}: {}".format(children.index(failed), world, how, said)
    names = ", ".join(str(children.index(child)) for child in silent)
    why = "stopped by a signal, e.g. SIGSTOP" if stopped else "still running"
    return "process{} {} of {} stopped answering ({}); process {} timed out waiting and {}: {}".format(
        "es" if len(silent) > 1 else "", names, world, why, children.index(failed), how, said)


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return "signal {}".format(number)
