"""training/launch/supervisor.py: one failed process stops the others, the error line, signals, parent death, affinity.

The children are tiny `python -c` programs; the bounds on elapsed time only tell "stopped by the supervisor" from
"ran to its end" (the sleepers sleep 120 s), they measure nothing.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO_ROOT

from training.launch import supervisor
from training.launch.supervisor import ProcessSpec

SLEEPER = "import os, sys, time\nopen(sys.argv[1], 'w').write(str(os.getpid()))\ntime.sleep(120)\n"
DEAF_SLEEPER = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + SLEEPER
FAILER = ("import sys, time\ntime.sleep(0.5)\nprint('step 1 fine')\nprint('error: rank 1 broke', file=sys.stderr)\n"
          "print('last words on stdout')\nsys.exit(3)\n")
TRACEBACK_FAILER = "import time\ntime.sleep(0.5)\nraise RuntimeError('port 29500 already in use')\n"


def gone(pid):
    """True once `pid` has exited (a zombie waiting for a reaper counts as gone)."""
    try:
        with open("/proc/{}/status".format(pid)) as handle:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in handle)
    except OSError:
        return True


def wait_until(condition, seconds=30):
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        time.sleep(0.1)
    return condition()


def python(code, *args):
    return [sys.executable, "-c", code] + list(args)


def test_a_failing_process_stops_its_sleeping_sibling_with_one_error_line(tmp_path, capfd):
    pid_file = str(tmp_path / "pid0")
    specs = [ProcessSpec(python(SLEEPER, pid_file), None, log_path=str(tmp_path / "0.log")),
             ProcessSpec(python(FAILER), None, log_path=str(tmp_path / "1.log"))]
    start = time.time()
    code = supervisor.supervise(specs, grace_seconds=20)
    assert code == 3
    assert time.time() - start < 15  # the sleeper was stopped by SIGTERM, not after its 120 s
    assert gone(int(open(pid_file).read()))
    assert capfd.readouterr().err.splitlines() == ["error: process 1 of 2 exited with code 3: rank 1 broke"]
    assert open(str(tmp_path / "1.log")).read().splitlines() == [
        "step 1 fine", "error: rank 1 broke", "last words on stdout"]


def test_the_error_line_of_a_traceback_and_of_inherited_stderr(tmp_path, capfd):
    """No log file (main.py's spawn path): the error line is the exception; the traceback stays off the terminal."""
    specs = [ProcessSpec(python(SLEEPER, str(tmp_path / "pid0")), None), ProcessSpec(python(TRACEBACK_FAILER), None)]
    assert supervisor.supervise(specs, grace_seconds=20) == 1
    err = capfd.readouterr().err.splitlines()
    assert err == ["error: process 1 of 2 exited with code 1: RuntimeError: port 29500 already in use"]


def test_a_process_deaf_to_sigterm_is_killed_after_the_grace_period(tmp_path, capfd):
    pid_file = str(tmp_path / "pid0")
    specs = [ProcessSpec(python(DEAF_SLEEPER, pid_file), None, log_path=str(tmp_path / "0.log")),
             ProcessSpec(python(FAILER), None, log_path=str(tmp_path / "1.log"))]
    start = time.time()
    assert supervisor.supervise(specs, grace_seconds=1) == 3
    assert time.time() - start < 15
    assert gone(int(open(pid_file).read()))
    assert "1 training process(es) still running 1 s after SIGTERM: killed" in capfd.readouterr().out


def test_all_succeed_and_the_cpu_binding_is_applied(tmp_path):
    code = "import os; print(sorted(os.sched_getaffinity(0)))"
    usable = sorted(os.sched_getaffinity(0))
    specs = [ProcessSpec(python(code), None, log_path=str(tmp_path / "0.log"), cpus=[usable[0]]),
             ProcessSpec(python(code), dict(os.environ), log_path=str(tmp_path / "1.log"))]
    assert supervisor.supervise(specs) == 0
    assert open(str(tmp_path / "0.log")).read().strip() == str([usable[0]])
    assert open(str(tmp_path / "1.log")).read().strip() == str(usable)


def test_cpu_share_splits_the_cores_evenly():
    assert [supervisor.cpu_share(rank, 8, cores=96) for rank in (0, 7)] == [list(range(0, 12)),
                                                                           list(range(84, 96))]
    assert supervisor.cpu_share(3, 8, cores=4) == [3]  # fewer cores than processes: one each
    assert supervisor.threads_per_process(2, cores=16) == 8


DRIVER = textwrap.dedent("""
    import sys
    from training.launch import supervisor
    if sys.argv[1] == "watchdog":
        supervisor.parent_death_signal_available = lambda: False
    sleeper = {sleeper!r}
    specs = [supervisor.ProcessSpec([sys.executable, "-c", sleeper, sys.argv[2] + str(rank)], None,
                                    log_path=sys.argv[2] + str(rank) + ".log") for rank in range(2)]
    print("started", flush=True)
    sys.exit(supervisor.supervise(specs, grace_seconds=20))
    """)


def start_driver(tmp_path, how):
    prefix = str(tmp_path / "pid")
    driver = subprocess.Popen(python(DRIVER.format(sleeper=SLEEPER), how, prefix), cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert wait_until(lambda: all(os.path.exists(prefix + str(rank)) and open(prefix + str(rank)).read()
                                  for rank in range(2)))
    return driver, [int(open(prefix + str(rank)).read()) for rank in range(2)]


@pytest.mark.parametrize("how", ["pdeathsig", "watchdog"])
def test_children_die_when_the_supervisor_is_sigkilled(tmp_path, how):
    driver, pids = start_driver(tmp_path, how)
    driver.send_signal(signal.SIGKILL)
    driver.communicate(timeout=30)
    assert wait_until(lambda: all(gone(pid) for pid in pids), seconds=20), "children outlived the supervisor"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_every_child_and_exits_130(tmp_path, sig):
    driver, pids = start_driver(tmp_path, "pdeathsig")
    driver.send_signal(sig)
    stdout, stderr = driver.communicate(timeout=30)
    assert driver.returncode == 130, stderr
    assert "interrupted: stopping 2 training process(es)" in stdout
    assert all(gone(pid) for pid in pids)


def test_a_stopped_run_leaves_no_grandchildren_behind(tmp_path):
    """A rank's own children (data loader workers) live in its process group and are killed with it."""
    pid_file = str(tmp_path / "grandchild")
    parent = ("import subprocess, sys, time\n"
              "subprocess.Popen([sys.executable, '-c', {sleeper!r}, {pid!r}])\n"
              "time.sleep(1)\nprint('error: worker left behind')\nsys.exit(4)\n").format(sleeper=SLEEPER, pid=pid_file)
    specs = [ProcessSpec(python(parent), None, log_path=str(tmp_path / "0.log"))]
    assert supervisor.supervise(specs, grace_seconds=5) == 4
    assert wait_until(lambda: gone(int(open(pid_file).read())), seconds=10)
