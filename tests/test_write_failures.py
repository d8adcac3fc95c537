"""A write that fails mid-run (full disk, a file system turned read-only) ends the run with one `error:` line naming
the file and the reason, exit 2, in one process and through the supervisor of two; metrics.jsonl holds whole
records only, and a resumed run cuts off a partial last line before it appends.

The full disk is tests/fakes/full_disk: the named files take a number of writes, then one comes up short and the
later ones fail."""
import errno
import json
import os
import subprocess
import sys

import pytest
from conftest import FAKES_DIR, REPO_ROOT

import main
from training.checkpoints import files
from training.errors import UserError
from training.logs import modelzoo_format
from tests.fakes.full_disk.full_disk import FullDisk
from tools import plot_log


pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--dummy", "-a", "shufflenet_v2_x0_5", "-b", "4", "--lr", "0.01", "--train-crop-size", "32", "-j", "0",
        "--num-classes", "3", "--device", "cpu", "--seed", "1", "-p", "1", "--steps-per-epoch", "3"]


def records(path):
    with open(path, "rb") as stream:
        content = stream.read()
    assert content.endswith(b"\n"), content[-80:]
    return [json.loads(line) for line in content.decode("utf-8").splitlines()]


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "the disk is full (ENOSPC)"),
                                          (errno.EROFS, "the folder is on a read-only file system (EROFS)")])
def test_a_failed_metrics_write_is_one_line_and_the_resume_marker_gets_its_own_line(tmp_path, capsys, monkeypatch,
                                                                                   code, reason):
    out = str(tmp_path / "run")
    argv = TINY + ["--epochs", "3", "--resume", "auto", "--output-dir", out]
    metrics = os.path.join(out, "metrics.jsonl")
    FullDisk("metrics.jsonl", 3 + 1 + 1, code).install(monkeypatch.setattr)  # fills up in epoch 1's 2nd record
    assert main.main(argv) == 2
    assert capsys.readouterr().err.splitlines() == ["error: could not write {}: {}".format(metrics, reason)]
    monkeypatch.undo()  # space freed
    assert [r["kind"] for r in records(metrics)].count("epoch") == 1  # whole records only

    assert main.main(argv) == 0
    written = records(metrics)
    assert {"kind": "resume", "epoch": 1} in written
    assert len(plot_log.read_log(metrics).steps) == 3 * 3  # each step drawn once


def test_a_resumed_run_cuts_off_a_partial_last_record_first(tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = TINY + ["--epochs", "2", "--resume", "auto", "--output-dir", out]
    assert main.main(argv[:-4] + ["--epochs", "1", "--output-dir", out]) == 0
    metrics = os.path.join(out, "metrics.jsonl")
    before = records(metrics)
    with open(metrics, "ab") as stream:  # what a process killed inside a write of an older version leaves
        stream.write(b'{"kind": "step", "epoch": 1, "lo')
    capsys.readouterr()
    assert main.main(argv) == 0
    out_lines = capsys.readouterr().out.splitlines()
    assert "=> {}: removed a partial last record (32 bytes) that an interrupted write left".format(
        metrics) in out_lines
    written = records(metrics)
    assert written[:len(before)] == before and written[len(before)] == {"kind": "resume", "epoch": 1}


def test_append_line_writes_whole_lines_or_nothing(tmp_path, monkeypatch):
    path = str(tmp_path / "log.jsonl")
    files.append_line(path, "first")
    FullDisk("log.jsonl", 0).install(monkeypatch.setattr)
    with pytest.raises(UserError) as info:
        files.append_line(path, "a second line, longer than what fits")
    assert str(info.value) == "could not write {}: the disk is full (ENOSPC)".format(path)
    monkeypatch.undo()
    with open(path, "rb") as stream:
        assert stream.read() == b"first\n"


def test_repair_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    assert files.repair_last_line(str(path)) == 0  # missing
    path.write_bytes(b"")
    assert files.repair_last_line(str(path)) == 0
    path.write_bytes(b"no newline at all")
    assert files.repair_last_line(str(path)) == 17 and path.read_bytes() == b""
    path.write_bytes(b"a\n" * 40000 + b"cut")  # the last newline is beyond the first 64 KiB read from the end
    assert files.repair_last_line(str(path)) == 3 and path.read_bytes() == b"a\n" * 40000


def test_a_failed_tensorboard_write_is_one_line(tmp_path, capsys, monkeypatch):
    """(With tensorboard 2.11's background writer the run hung forever here: its thread died, its queue filled.)"""
    pytest.importorskip("tensorboard", reason="--tensorboard needs the tensorboard package")
    out, events = str(tmp_path / "run"), str(tmp_path / "tb")
    FullDisk("events.out.tfevents", 3).install(monkeypatch.setattr)
    assert main.main(TINY + ["--epochs", "2", "--tensorboard", events, "--output-dir", out]) == 2
    captured = capsys.readouterr()
    monkeypatch.undo()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].endswith(": the disk is full (ENOSPC)"), lines
    assert lines[0].startswith("error: could not write {}/events.out.tfevents.".format(events)), lines


def test_summary_into_a_folder_below_a_file_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    head = modelzoo_format.prefix("cpu", 0)
    log = tmp_path / "train_0.log"
    log.write_text("\n".join([modelzoo_format.format_step(head, 0, 0, 1, [("Loss", 7.0, 7.0, ".4e")]),
                              modelzoo_format.format_fps(head, 100.0, 1.0)]) + "\n")
    result = subprocess.run([sys.executable, "-m", "tools.modelzoo_summary", str(log),
                             "--rank-size", "1", "--batch-size", "8", "--mode", "perf", "--e2e-seconds", "1",
                             "--output-dir", str(blocker / "summary")], capture_output=True, text=True,
                            cwd=REPO_ROOT)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: could not create folder {}: ".format(blocker / "summary"))


def test_two_processes_report_rank_0s_full_disk_in_one_line(tmp_path):
    """The real processes: rank 0's metrics.jsonl fills up; the supervisor's one line, exit 2, no traceback."""
    out = str(tmp_path / "run")
    env = dict(os.environ, OMP_NUM_THREADS="1", FULL_DISK_PREFIX="metrics.jsonl", FULL_DISK_WHOLE_WRITES="5",
               PYTHONPATH=os.path.join(FAKES_DIR, "full_disk"))
    env.pop("MASTER_PORT", None)
    result = subprocess.run([sys.executable, "main.py"] + TINY + [
        "--epochs", "2", "--multiprocessing-distributed", "--device_num", "2", "--output-dir", out],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=240)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == ["error: process 0 of 2 exited with code 2: could not write {}: the disk is "
                                          "full (ENOSPC)".format(os.path.join(out, "metrics.jsonl"))]
