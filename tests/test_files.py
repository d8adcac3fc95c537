"""training/files.py: atomic_write gives normal permissions and never leaves half a file or a temp file."""
import os

import pytest

from training.files import atomic_write


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
