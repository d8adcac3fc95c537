"""Atomic file writes: the one way main.py and the tools replace a file.

The new content goes to a temporary file in the same folder, is fsynced and renamed over `path`, so a crash,
Ctrl-C or SIGKILL at any moment leaves either the old file or the new one, never half a file.
"""
import os
import tempfile


def atomic_write(path, write_fn):
    """Call `write_fn(stream)` on a binary temp file beside `path`, then rename it to `path`.

    The file gets the permissions of a normal new file (0o666 minus the umask; mkstemp alone gives 0600). On any
    exception, KeyboardInterrupt included, the temp file is removed and an existing `path` is left as it was.
    """
    folder = os.path.dirname(os.path.abspath(path))
    handle, temp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            write_fn(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise
    _fsync_folder(folder)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder):
    """Make the rename itself durable (skipped where folders cannot be opened, e.g. Windows)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
