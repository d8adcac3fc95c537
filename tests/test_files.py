"""training/files.py: atomic_write gives normal permissions, never leaves half a file or a temp file, and reports
an unwritable output as one line that keeps the previous version; remove_stale_temps removes only its temp files."""
import errno
import os
import signal
import subprocess
import sys
import tempfile

import pytest
from conftest import REPO_ROOT

from training.errors import UserError
from training.files import atomic_write, remove_stale_temps


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_mode_follows_the_umask(tmp_path, umask, mode):
    path = str(tmp_path / "out.bin")
    previous = os.umask(umask)
    try:
        atomic_write(path, lambda stream: stream.write(b"new"))
    finally:
        os.umask(previous)
    assert os.stat(path).st_mode & 0o777 == mode
    with open(path, "rb") as handle:
        assert handle.read() == b"new"


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, error):
    path = str(tmp_path / "out.bin")
    atomic_write(path, lambda stream: stream.write(b"old"))

    def broken(stream):
        stream.write(b"half a")
        raise error()

    with pytest.raises(error):
        atomic_write(path, broken)
    assert os.listdir(str(tmp_path)) == ["out.bin"]
    with open(path, "rb") as handle:
        assert handle.read() == b"old"


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def expect_write_error(path, write_fn, *fragments):
    with pytest.raises(UserError) as info:
        atomic_write(path, write_fn)
    message = str(info.value)
    assert "\n" not in message and message.startswith("could not write {}: ".format(path)), message
    for fragment in fragments:
        assert fragment in message, message


def test_full_disk_names_the_file_and_keeps_the_previous_version(tmp_path):
    path = str(tmp_path / "checkpoint.pth.tar")
    atomic_write(path, lambda stream: stream.write(b"epoch 3"))

    def full_disk(stream):
        stream.write(b"epoch 4, half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    expect_write_error(path, full_disk, "the disk is full (ENOSPC)", "its previous version is intact")
    assert os.listdir(str(tmp_path)) == ["checkpoint.pth.tar"] and read(path) == b"epoch 3"
    new = str(tmp_path / "model_best.pth.tar")
    expect_write_error(new, full_disk, "the disk is full", "there was no earlier version of it")
    assert os.listdir(str(tmp_path)) == ["checkpoint.pth.tar"]


def test_read_only_folder(tmp_path, monkeypatch):
    """Tests run as root, whom chmod does not stop: the read-only file system answers through a patched mkstemp."""
    path = str(tmp_path / "checkpoint.pth.tar")
    atomic_write(path, lambda stream: stream.write(b"old"))

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    expect_write_error(path, lambda stream: stream.write(b"new"), "read-only file system (EROFS)",
                       "its previous version is intact")
    monkeypatch.undo()
    assert read(path) == b"old" and os.listdir(str(tmp_path)) == ["checkpoint.pth.tar"]


def test_output_path_under_a_file_or_onto_a_folder(tmp_path):
    blocker = str(tmp_path / "out")
    atomic_write(blocker, lambda stream: stream.write(b"a file where the output folder should be"))
    expect_write_error(os.path.join(blocker, "checkpoint.pth.tar"), lambda stream: stream.write(b"x"),
                       "a part of the folder path is a file, not a folder (ENOTDIR)")
    folder = tmp_path / "model_best.pth.tar"
    (folder / "inside").mkdir(parents=True)
    expect_write_error(str(folder), lambda stream: stream.write(b"x"), "that path is a folder (EISDIR)")
    assert sorted(os.listdir(str(tmp_path))) == ["model_best.pth.tar", "out"] and os.listdir(str(folder)) == ["inside"]
    assert read(blocker) == b"a file where the output folder should be"


KILLED_WRITE = """
import os, signal, sys
from training.files import atomic_write
def killed(stream):
    stream.write(b"half a checkpoint")
    stream.flush()
    os.kill(os.getpid(), signal.SIGKILL)
atomic_write(sys.argv[1], killed)
"""


def test_remove_stale_temps_removes_only_what_a_killed_write_left(tmp_path):
    path = str(tmp_path / "checkpoint.pth.tar")
    atomic_write(path, lambda stream: stream.write(b"epoch 3"))
    for _ in range(2):
        killed = subprocess.run([sys.executable, "-c", KILLED_WRITE, path], cwd=REPO_ROOT)
        assert killed.returncode == -signal.SIGKILL
    stale = [name for name in os.listdir(str(tmp_path)) if name != "checkpoint.pth.tar"]
    assert len(stale) == 2 and all(name.startswith(".tmp-") and name.endswith(".part") for name in stale)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"keep")
    keep = [".tmp-abc123.part.bak", "x.tmp-abc123.part", ".tmp-ABC123.part", ".tmp-.part", "notes.part"]
    for name in keep:
        (tmp_path / name).write_bytes(b"keep")
    (tmp_path / ".tmp-folder00.part").mkdir()
    os.symlink(str(outside), str(tmp_path / ".tmp-link0000.part"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".tmp-inner000.part").write_bytes(b"keep")

    assert remove_stale_temps(str(tmp_path)) == 2
    left = sorted(os.listdir(str(tmp_path)))
    assert left == sorted(keep + ["checkpoint.pth.tar", "outside.bin", ".tmp-folder00.part", ".tmp-link0000.part",
                                  "sub"])
    assert read(path) == b"epoch 3" and outside.read_bytes() == b"keep"
    assert os.listdir(str(tmp_path / "sub")) == [".tmp-inner000.part"]
    assert remove_stale_temps(str(tmp_path)) == 0
    assert remove_stale_temps(str(tmp_path / "missing")) == 0
