"""A port in use is one line of ours, never torch's own c10d socket warnings besides it (torch 1.11 .. 2.1 print
`[W socket.cpp] ... Address already in use` lines when TCPStore's server cannot bind): rank 0 checks the port before
it asks torch for the store. The --multiprocessing-distributed case is in test_rendezvous.py; here the rank runs
alone, as on a node of a several-node run, without the supervisor in between."""
import os
import socket
import subprocess
import sys

from conftest import REPO_ROOT

from training.launch import process_group

RANK_0_OF_2 = ["--dummy", "-a", "shufflenet_v2_x0_5", "-b", "2", "--epochs", "1", "--steps-per-epoch", "1",
               "--train-crop-size", "32", "--device", "cpu", "-j", "0", "--world-size", "2", "--rank", "0",
               "--dist-timeout", "60"]


def taken_port():
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("", 0))
    taken.listen(4)
    return taken


def test_rank_0_on_a_port_in_use_says_one_line(tmp_path):
    with taken_port() as taken:
        port = taken.getsockname()[1]
        env = {name: value for name, value in os.environ.items()
               if name not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
        done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "main.py")] + RANK_0_OF_2
                              + ["--port", str(port), "--output-dir", str(tmp_path / "out")],
                              capture_output=True, text=True, cwd=REPO_ROOT,
                              env=dict(env, OMP_NUM_THREADS="1"), timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: port {} is in use (another run?), so rank 0 cannot open the process group's store at 127.0.0.1:{}: "
        "give a free --port or MASTER_PORT".format(port, port)]


def test_the_probe_tells_a_taken_port_from_a_free_one():
    with taken_port() as taken:
        assert process_group._port_taken(taken.getsockname()[1])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("", 0))
        free = closed.getsockname()[1]
    assert not process_group._port_taken(free)
