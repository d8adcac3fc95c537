"""Leaving the process group at the end of a run never hangs, and a rank whose teardown does hang ends itself.

On torch 2.1 a rank could stay for ever in destroy_process_group after a finished run: its ProcessGroup wrapper was
destroyed with the interpreter lock held, ProcessGroupGloo's destructor joined its worker threads, and a worker
freeing a finished collective's tensor waited for that lock (process_group.destroy). The cycles below open and leave
a 2-process gloo group many times with the collectives main.py uses, the second rank leaving at once; main.py's
2-process run is repeated as a user starts it.
"""
import os
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO_ROOT, torch_version

BOUND_SECONDS = 120  # one try; a hung teardown would wait for ever (the watchdog ends it after 30 s)
CYCLES = 40
MAIN_TRIES = 10 if (2, 0) <= torch_version() < (2, 8) else 3  # 10 where torch had the deadlock
HANG_LINE = "did not close its process group"
CYCLE_SCRIPT = textwrap.dedent("""\
    import datetime, sys, time
    import training
    import torch
    import torch.distributed as dist
    from training.launch import process_group

    rank, folder = int(sys.argv[1]), sys.argv[2]
    timeout = datetime.timedelta(seconds=30)
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    for cycle in range({cycles}):
        dist.init_process_group("gloo", init_method="file://{{}}/cycle{{}}".format(folder, cycle), rank=rank,
                                world_size=2, timeout=timeout)
        process_group.broadcast_buffers(model)
        total = process_group.all_reduce_sum([rank, 1.0], torch.device("cpu"))
        assert total == [1.0, 2.0], total
        if rank == 0:
            time.sleep(0.01 * (cycle % 5))  # the other rank leaves while this one still holds the group
        process_group.leave(exit_code=3, timeout_seconds=20)
    print("left", {cycles}, "times", flush=True)
""")
STUCK_SCRIPT = textwrap.dedent("""\
    import sys, time
    import training
    from training.launch import process_group

    process_group.is_initialized = lambda: True
    process_group.dist.get_rank = lambda: 1
    process_group.HARD_STOP_SECONDS = 1.0
    process_group.destroy = {stuck}
    process_group.leave(exit_code={code}, timeout_seconds=1.0)
    print("not reached", flush=True)
""")


def run_both(commands, timeout):
    """Run the commands at once until all end, one fails, or `timeout` passes; the rest are killed. Returns
    [(exit status or None, stdout, stderr)]."""
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                                  env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=REPO_ROOT) for command in commands]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(process.poll() == 0 for process in processes):
        if any(process.poll() not in (None, 0) for process in processes):
            break
        time.sleep(0.2)
    codes = [process.poll() for process in processes]
    for process in processes:
        process.kill()
    return [(code,) + process.communicate() for code, process in zip(codes, processes)]


@pytest.mark.slow
def test_leaving_a_gloo_group_right_after_its_collectives_never_hangs(tmp_path):
    script = CYCLE_SCRIPT.format(cycles=CYCLES)
    results = run_both([[sys.executable, "-c", script, str(rank), str(tmp_path)] for rank in (0, 1)],
                       timeout=BOUND_SECONDS * 2)
    assert [(code, out.strip()) for code, out, _ in results] == [(0, "left {} times".format(CYCLES))] * 2, \
        "\n".join(err[-2000:] for _, _, err in results)


@pytest.mark.slow
def test_a_two_process_run_exits_every_time(tmp_path):
    for attempt in range(MAIN_TRIES):
        output_dir = str(tmp_path / "try{}".format(attempt))
        done = subprocess.run(
            [sys.executable, os.path.join(REPO_ROOT, "main.py"), "--dummy", "--multiprocessing-distributed",
             "--device_num", "2", "--device", "cpu", "-j", "0", "-a", "shufflenet_v2_x0_5", "-b", "4", "--epochs",
             "1", "--steps-per-epoch", "2", "--train-crop-size", "32", "--lr", "0.1", "--seed", str(attempt),
             "--output-dir", output_dir], capture_output=True, text=True, cwd=REPO_ROOT, timeout=BOUND_SECONDS,
            env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert done.returncode == 0, "try {}: {}".format(attempt, done.stderr[-3000:])
        assert HANG_LINE not in done.stderr, done.stderr
        assert os.path.isfile(os.path.join(output_dir, "checkpoint.pth.tar"))


@pytest.mark.parametrize("code", [0, 2])
def test_a_teardown_stuck_outside_the_interpreter_lock_ends_with_one_line(code):
    """time.sleep releases the lock, as torch's process-group destructors do: the watchdog thread ends the process
    with the run's own exit status."""
    script = STUCK_SCRIPT.format(stuck="lambda: time.sleep(600)", code=code)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=BOUND_SECONDS,
                          cwd=REPO_ROOT)
    assert (done.returncode, done.stdout) == (code, "")
    assert done.stderr.splitlines() == [
        "warning: process 1 did not close its process group within 1 s after the run (a hang inside torch); it ends "
        "now without it, and everything it wrote is complete"]


def test_a_teardown_stuck_holding_the_interpreter_lock_is_ended_by_faulthandler():
    """A C call that never releases the lock (sum over a huge range) starves the watchdog thread: faulthandler's
    thread ends the process, with the stacks."""
    script = STUCK_SCRIPT.format(stuck="lambda: sum(range(10 ** 15))", code=0)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=BOUND_SECONDS,
                          cwd=REPO_ROOT)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("Timeout (0:00:02)!"), done.stderr
    assert "in leave" in done.stderr
