"""training/launch/supervisor.py's one line: torch's `[rankN]: ` prefixed tracebacks, the rank that stopped
answering (SIGSTOP) when another timed out waiting for it, a process's own error over the lost connections it
causes elsewhere, and a signal death reported as 128+N; no traceback reaches the terminal."""
import signal
import sys

import pytest

from training.launch import supervisor
from training.launch.supervisor import ProcessSpec

RANK0_TIMES_OUT = """import sys, time
time.sleep(1.5)
for line in ["Traceback (most recent call last):", '  File "main.py", line 235, in <module>',
             "    sys.exit(main())", "             ^^^^^^",
             "RuntimeError: [/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out "
             "waiting 15000ms for recv operation to complete"]:
    print("[rank0]: " + line, file=sys.stderr)
sys.exit(1)
"""
STOPS_ITSELF = "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)\n"
CHAINED = """import sys
print("[rank1]: Traceback (most recent call last):", file=sys.stderr)
print('[rank1]:   File "x.py", line 1, in <module>', file=sys.stderr)
print("[rank1]: OSError: [Errno 28] No space left on device", file=sys.stderr)
print("[rank1]: ", file=sys.stderr)
print("[rank1]: During handling of the above exception, another exception occurred:", file=sys.stderr)
print("[rank1]: ", file=sys.stderr)
print("[rank1]: Traceback (most recent call last):", file=sys.stderr)
print('[rank1]:   File "x.py", line 3, in <module>', file=sys.stderr)
print("[rank1]: KeyError: 'lost'", file=sys.stderr)
print("an ordinary line after it", file=sys.stderr)
sys.exit(1)
"""
PEER_GONE = ("import sys, time\ntime.sleep(0.3)\nprint('RuntimeError: Connection closed by peer [127.0.0.1]:1234', "
             "file=sys.stderr)\nsys.exit(1)\n")
OWN_ERROR = ("import sys, time\ntime.sleep(0.8)\nprint('error: could not write /x/metrics.jsonl: the disk is full "
             "(ENOSPC)', file=sys.stderr)\nsys.exit(2)\n")


def python(code):
    return [sys.executable, "-c", code]


def specs(codes, tmp_path, logs):
    return [ProcessSpec(python(code), None, log_path=str(tmp_path / "{}.log".format(rank)) if logs else None)
            for rank, code in enumerate(codes)]


@pytest.mark.parametrize("logs", [True, False])
def test_the_rank_that_stopped_answering_is_named(tmp_path, capfd, logs):
    code = supervisor.supervise(specs([RANK0_TIMES_OUT, STOPS_ITSELF], tmp_path, logs), grace_seconds=1)
    assert code == 1
    assert capfd.readouterr().err.splitlines() == [
        "error: process 1 of 2 stopped answering (stopped by a signal, e.g. SIGSTOP); process 0 timed out waiting and "
        "exited with code 1: RuntimeError: Timed out waiting 15000ms for recv operation to complete"]


@pytest.mark.parametrize("logs", [True, False])
def test_rank_prefixed_chained_traceback_gives_its_first_exception(tmp_path, capfd, logs):
    assert supervisor.supervise(specs([CHAINED], tmp_path, logs), grace_seconds=1) == 1
    err = capfd.readouterr().err.splitlines()
    shown = [] if logs else ["an ordinary line after it"]  # the traceback itself stays off the terminal
    assert err == shown + ["error: process 0 of 1 exited with code 1: OSError: [Errno 28] No space left on device"]


def test_a_processs_own_error_wins_over_the_lost_connection_it_causes(tmp_path, capfd):
    assert supervisor.supervise(specs([OWN_ERROR, PEER_GONE], tmp_path, True), grace_seconds=1) == 2
    assert capfd.readouterr().err.splitlines() == [
        "error: process 0 of 2 exited with code 2: could not write /x/metrics.jsonl: the disk is full (ENOSPC)"]


def test_a_signal_death_is_128_plus_its_number(tmp_path, capfd):
    killed = "import os, signal, time\nprint('step 3', flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n"
    assert supervisor.supervise(specs([killed], tmp_path, True), grace_seconds=1) == 128 + signal.SIGKILL
    assert capfd.readouterr().err.splitlines() == [
        "error: process 0 of 1 was killed by SIGKILL (exit code 137): step 3"]
    assert supervisor.exit_code(-15) == 143 and supervisor.exit_code(3) == 3
