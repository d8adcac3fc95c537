"""File writes of main.py and the tools: atomic replacement, whole-line appends, and moving a previous run aside.

- atomic_write: the new content is produced in memory, written to a temporary file in the same folder, fsynced and
  renamed over `path`, so a crash, Ctrl-C, SIGKILL or full disk at any moment leaves either the old file or the new
  one, never half a file; a killed write can leave only a temp file, which remove_stale_temps removes.
- append_line / append_bytes: one line added to a log (metrics.jsonl), or records to an event file, in one write;
  a write that fails part-way is cut back off, and repair_last_line removes the partial last line a killed process
  may still have left.
- move_aside: a previous run's results go into `previous-<time>/` instead of being overwritten.
Every failure is a one-line UserError naming the file and the reason.
"""
import errno
import io
import os
import re
import stat
import tempfile
import time

from training.errors import UserError

# Names of atomic_write's temp files: tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX) adds 8 characters
# from [a-z0-9_]; remove_stale_temps matches exactly this shape and nothing else.
TEMP_PREFIX = ".tmp-"
TEMP_SUFFIX = ".part"
_TEMP_NAME = re.compile(r"\A{}[a-z0-9_]+{}\Z".format(re.escape(TEMP_PREFIX), re.escape(TEMP_SUFFIX)))

# What a failed write most likely means, for the error line (any other errno: its strerror alone).
_WRITE_HINTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the folder is on a read-only file system",
    errno.EACCES: "no permission to write in that folder",
    errno.EPERM: "no permission to write in that folder",
    errno.ENOTDIR: "a part of the folder path is a file, not a folder",
    errno.EEXIST: "a part of the folder path is a file, not a folder",
    errno.EISDIR: "that path is a folder",
    errno.ENOENT: "the folder does not exist",
}


def atomic_write(path, write_fn):
    """Call `write_fn(stream)` on an in-memory binary stream, write that to a temp file beside `path`, fsync it and
    rename it to `path` (memory: one copy of the content, a few dozen MB for a ShuffleNetV2 checkpoint).

    The file gets the permissions of a normal new file (0o666 minus the umask; mkstemp alone gives 0600). On any
    exception, KeyboardInterrupt included, the temp file is removed and an existing `path` is left as it was. An
    OSError (full disk, read-only or missing folder, a file where a folder should be) becomes a one-line UserError
    naming `path`, the reason and whether an earlier version of it is intact.
    """
    folder = os.path.dirname(os.path.abspath(path))
    # write_fn writes to memory first: a failing disk write then fails here, in Python, never inside write_fn
    # (torch 1.8's zip writer aborts the whole process from a C++ destructor after a failed write to its stream).
    content = io.BytesIO()
    temp = None
    try:
        write_fn(content)
        handle, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=folder)
        with os.fdopen(handle, "wb") as stream:
            stream.write(content.getbuffer())
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except BaseException as exc:
        if temp is not None:
            _remove_quietly(temp)
        if isinstance(exc, OSError) and exc.errno is not None:
            raise UserError(_write_failure(path, exc)) from None
        raise
    _fsync_folder(folder)


def make_folder(folder):
    """os.makedirs(folder, exist_ok=True), with a one-line UserError when the folder cannot be made (a file in the
    way, read-only file system, no permission)."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise UserError("could not create folder {}: {}".format(folder, os_error_reason(exc))) from None


def os_error_reason(exc):
    """`what it means (ERRNO)` for an OSError."""
    meaning = _WRITE_HINTS.get(exc.errno) or exc.strerror or type(exc).__name__
    return "{} ({})".format(meaning, errno.errorcode.get(exc.errno, exc.errno))


def write_failure(path, exc):
    """The one line (without `error: `) for an OSError met while writing `path`."""
    return "could not write {}: {}".format(path, os_error_reason(exc))


def _write_failure(path, exc):
    previous = "its previous version is intact" if os.path.isfile(path) else "there was no earlier version of it"
    return "{}; {}".format(write_failure(path, exc), previous)


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def remove_stale_temps(folder):
    """Remove the temp files a killed atomic_write left in `folder` (names `.tmp-XXXXXXXX.part`, regular files only,
    not in subfolders); the number removed. A missing folder has none. Call it before this process writes there."""
    removed = 0
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for name in names:
        if _TEMP_NAME.match(name) and _remove_regular_file(os.path.join(folder, name)):
            removed += 1
    return removed


def _remove_regular_file(path):
    """True if `path` was a regular file (not a link, folder or pipe) and is now removed."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        os.remove(path)
    except FileNotFoundError:  # gone meanwhile
        return False
    return True


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


def append_line(path, text):
    """Append `text` and a newline to `path` (append_bytes): the line is in the file whole or not at all."""
    append_bytes(path, (text + "\n").encode("utf-8"))


def append_bytes(path, data):
    """Append `data` to `path` (created with normal permissions) in one write(2) call, so it is in the file whole or
    not at all: a write that fails part-way (full disk) is cut back off before the UserError naming the file and
    the reason. (Only one process appends to a given file.)"""
    try:
        handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as exc:
        raise UserError(write_failure(path, exc)) from None
    try:
        start = os.fstat(handle).st_size
        _write_whole(handle, data, start, path)
    finally:
        os.close(handle)


def _write_whole(handle, data, start, path):
    """os.write all of `data` at the end of `handle` (which was `start` bytes long; a short write is continued, and
    the next call gives the reason); on failure, truncate back to `start` and raise a UserError."""
    written = 0
    try:
        while written < len(data):
            count = os.write(handle, data[written:])
            if count <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written += count
    except OSError as exc:
        try:
            os.ftruncate(handle, start)
        except OSError:
            pass
        raise UserError(write_failure(path, exc)) from None


def repair_last_line(path):
    """Cut a partial last line (no newline at its end: a write killed part-way) off the text file `path`; the
    number of bytes removed (0 when the file ends with a newline, is empty or missing)."""
    try:
        with open(path, "rb+") as stream:
            size = stream.seek(0, os.SEEK_END)
            keep = _end_of_last_line(stream, size)
            if keep < size:
                stream.truncate(keep)
            return size - keep
    except FileNotFoundError:
        return 0
    except OSError as exc:
        raise UserError(write_failure(path, exc)) from None


def _end_of_last_line(stream, size, chunk=65536):
    """The offset just past the last newline of an open binary file (0 when it has none)."""
    end = size
    while end > 0:
        start = max(0, end - chunk)
        stream.seek(start)
        found = stream.read(end - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


def move_aside(folder, paths, stamp=None):
    """Move the files `paths` (those that exist) into a new folder `folder/previous-<stamp>` (stamp: the local
    time, YYYYmmdd-HHMMSS); returns that folder, or None when there was nothing to move."""
    present = [path for path in paths if os.path.isfile(path)]
    if not present:
        return None
    target = os.path.join(folder, "previous-" + (stamp or time.strftime("%Y%m%d-%H%M%S")))
    try:
        target = _fresh_folder(target)
        for path in present:
            os.rename(path, os.path.join(target, os.path.basename(path)))
    except OSError as exc:
        raise UserError("could not move the previous run's files in {} aside: {}".format(
            folder, os_error_reason(exc))) from None
    return target


def _fresh_folder(path):
    """Create `path`, or `path-1`, `path-2`, ... when it exists; the one created."""
    candidate, count = path, 1
    while os.path.exists(candidate):
        candidate = "{}-{}".format(path, count)
        count += 1
    os.makedirs(candidate)
    return candidate
