"""training/checkpoints/files.py: atomic_write gives normal permissions, never leaves half a file or a temp file, and
reports
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
from training.checkpoints.files import atomic_write, remove_stale_temps


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
from training.checkpoints.files import atomic_write
real_fdopen = os.fdopen


class KilledMidWrite:
    '''The temp file of a process that is SIGKILLed after writing half of the content.'''

    def __init__(self, stream):
        self.stream = stream

    def write(self, data):
        self.stream.write(bytes(data[: len(data) // 2]))
        self.stream.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stream.close()


os.fdopen = lambda fd, mode: KilledMidWrite(real_fdopen(fd, mode))
atomic_write(sys.argv[1], lambda stream: stream.write(b"a new checkpoint"))
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


FULL_DISK_SAVE = """
import errno, os, sys
import torch
from training.checkpoints import checkpoint
from training import seeding
from training.errors import UserError

path = sys.argv[1]
checkpoint.atomic_save({"state_dict": {"w": torch.ones(4)}}, path)
real_fdopen = os.fdopen


class FullDisk:
    '''The temp file on a disk that fills up after 100 bytes.'''

    def __init__(self, stream):
        self.stream, self.written = stream, 0

    def write(self, data):
        if self.written + len(data) > 100:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += len(data)
        return self.stream.write(data)

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stream.close()


os.fdopen = lambda fd, mode: FullDisk(real_fdopen(fd, mode))
for legacy in (False, True):
    try:
        checkpoint.atomic_write(path, lambda stream: torch.save({"state_dict": {"w": torch.zeros(10000)}}, stream,
                                                                _use_new_zipfile_serialization=not legacy))
    except UserError as exc:
        print("error: {}".format(exc), flush=True)
"""


@pytest.mark.slow
def test_full_disk_during_torch_save_is_one_line_on_every_torch(tmp_path):
    """torch.save into a file on a full disk: a UserError, not an abort (torch 1.8's zip writer used to abort the
    process from a destructor after the first failed write)."""
    path = str(tmp_path / "checkpoint.pth.tar")
    result = subprocess.run([sys.executable, "-c", FULL_DISK_SAVE, path], cwd=REPO_ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    expected = "error: could not write {}: the disk is full (ENOSPC); its previous version is intact".format(path)
    assert result.stdout.splitlines() == [expected, expected]
    assert os.listdir(str(tmp_path)) == ["checkpoint.pth.tar"]
    from training.checkpoints.checkpoint import load_checkpoint
    assert load_checkpoint(path)["state_dict"]["w"].tolist() == [1.0] * 4


def test_checkpoint_folder_that_is_a_file(tmp_path):
    """main.py --output-dir FILE: atomic_save cannot create the folder and says why in one line."""
    from training.checkpoints.checkpoint import atomic_save

    blocker = tmp_path / "out"
    blocker.write_bytes(b"notes")
    for path in [blocker / "checkpoint.pth.tar", blocker / "deeper" / "checkpoint.pth.tar"]:
        with pytest.raises(UserError) as info:
            atomic_save({"w": 1}, str(path))
        assert str(info.value) in [
            "could not create folder {}: a part of the folder path is a file, not a folder ({})".format(
                os.path.dirname(str(path)), code) for code in ("EEXIST", "ENOTDIR")]
    assert blocker.read_bytes() == b"notes" and os.listdir(str(tmp_path)) == ["out"]
