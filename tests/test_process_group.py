"""training/launch/process_group.py: a process waiting for missing peers stays stoppable and has a deadline (also
on the torch 1.8.1 lane): `--world-size 2 --rank 0` without its peer is stopped by SIGTERM or Ctrl-C within seconds
with one error line naming what it waited for (exit 130), and a short --dist-timeout ends it with one error line
(exit 2). A port already in use reaches the user of --multiprocessing-distributed as rank 0's own error line."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT, tiny_run_args

from training.launch import modes

LONE = tiny_run_args("--dummy", "-b", "2", "--epochs", "1", "--steps-per-epoch", "1", "--seed", "0")
pytestmark = pytest.mark.slow  # each test starts main.py processes that wait for peers: 4-27 s
STOP_SECONDS = 10  # "within seconds": the wait polls every process_group.POLL_SECONDS


def start(argv, tmp_path, **popen):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return subprocess.Popen([sys.executable, os.path.join(REPO_ROOT, "main.py")] + LONE + argv
                            + ["--output-dir", str(tmp_path / "out")], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, **popen)


def wait_for_note(process):
    """The process says it waits (after process_group.NOTE_AFTER_SECONDS): from then on it is in the rendezvous."""
    line = process.stdout.readline()
    while line.startswith("warning: "):  # e.g. the learning-rate hint for this tiny batch
        line = process.stdout.readline()
    if not line.startswith("=> waiting for "):
        process.kill()
        raise AssertionError(line + process.communicate(timeout=60)[1])
    return line


def finish(process, timeout):
    out, err = process.communicate(timeout=timeout)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_lone_rank_stops_on_a_signal_with_one_line(signum, tmp_path):
    port = modes.free_port()
    process = start(["--world-size", "2", "--rank", "0", "--port", str(port)], tmp_path)
    note = wait_for_note(process)
    assert "1 of 2 processes at 127.0.0.1:{} (rendezvous)".format(port) in note, note
    signalled = time.time()
    process.send_signal(signum)
    line = finish(process, STOP_SECONDS)
    assert time.time() - signalled < STOP_SECONDS
    assert process.returncode == 130
    assert line == "error: interrupted while waiting for 1 of 2 processes at 127.0.0.1:{} (rendezvous)".format(port)
    assert not os.path.exists(str(tmp_path / "out"))


def test_a_rank_without_its_store_stops_on_sigterm(tmp_path):
    """Rank 1 waits for rank 0 to open the store: SIGTERM ends that wait too."""
    port = modes.free_port()
    process = start(["--world-size", "2", "--rank", "1", "--port", str(port)], tmp_path)
    wait_for_note(process)
    process.send_signal(signal.SIGTERM)
    line = finish(process, STOP_SECONDS)
    assert process.returncode == 130
    assert line == ("error: interrupted while waiting for process 0 to open 127.0.0.1:{} (rendezvous, rank 1 of 2)"
                    .format(port))


@pytest.mark.parametrize("rank", [0, 1])
def test_a_short_dist_timeout_ends_the_wait_with_one_line(rank, tmp_path):
    port = modes.free_port()
    process = start(["--world-size", "2", "--rank", str(rank), "--port", str(port), "--dist-timeout", "3"],
                    tmp_path)
    line = finish(process, 120)
    assert process.returncode == 2
    assert line.startswith("error: timed out after 3 s waiting for "), line
    assert line.endswith("or raise --dist-timeout"), line


def test_a_port_in_use_is_rank_0s_one_line(tmp_path):
    """--multiprocessing-distributed on a port that another program listens on: rank 0 cannot open the store;
    the supervisor stops rank 1 (waiting at that port) and shows rank 0's own error line."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("", 0))
        taken.listen(4)
        port = taken.getsockname()[1]
        process = start(["--multiprocessing-distributed", "--device_num", "2", "--port", str(port),
                         "--dist-timeout", "120"], tmp_path)
        line = finish(process, 120)
    assert process.returncode == 2
    assert line == ("error: process 0 of 2 exited with code 2: port {} is in use (another run?), so rank 0 cannot "
                    "open the process group's store at 127.0.0.1:{}: give a free --port or MASTER_PORT"
                    .format(port, port)), line


def test_the_spawn_parent_stops_its_waiting_ranks(tmp_path):
    """Node 0 of 2 spawns its 2 ranks, node 1 never comes: SIGTERM to the parent ends all of them, exit 130."""
    process = start(["--multiprocessing-distributed", "--device_num", "2", "--world-size", "2", "--rank", "0",
                     "--port", str(modes.free_port()), "-b", "4"], tmp_path, start_new_session=True)
    wait_for_note(process)
    process.send_signal(signal.SIGTERM)
    line = finish(process, 30)
    assert process.returncode == 130
    assert line.startswith("error: interrupted after "), line
    with pytest.raises(ProcessLookupError):  # the ranks are gone with it
        os.killpg(process.pid, 0)
