"""A disk that fills up (or turns read-only) while a run writes one of its files, for tests.

    fake = FullDisk(prefix="metrics.jsonl", whole_writes=5)  # files whose name starts with the prefix
    fake.install(monkeypatch.setattr)                        # in-process; sitecustomize.py installs it in a child

The named files take `whole_writes` writes in all; the next one stores only the first half of its bytes and reports
that (a short write, as write(2) does on a nearly full disk), every later one raises OSError(errno) (ENOSPC by
default, EROFS for a file system turned read-only). Writes through os.write, and through file objects opened with
open() / io.open() for writing, are counted; other files are not touched.
"""
import builtins
import errno as errnos
import io
import os


class FullDisk:
    def __init__(self, prefix, whole_writes, errno=errnos.ENOSPC):
        self.prefix = prefix
        self.left = int(whole_writes)
        self.full = False
        self.errno = errno
        self.real_write = os.write
        self.real_open = builtins.open

    def install(self, setattr_fn=setattr):
        setattr_fn(os, "write", self.write)
        setattr_fn(builtins, "open", self.open)
        setattr_fn(io, "open", self.open)

    def is_target(self, path):
        return os.path.basename(os.fsdecode(path)).startswith(self.prefix)

    def allow(self, size):
        """How many of `size` bytes fit; raises the OSError once nothing fits."""
        if self.full:
            raise OSError(self.errno, os.strerror(self.errno))
        self.left -= 1
        if self.left >= 0:
            return size
        self.full = True
        return size // 2

    def write(self, fd, data):
        try:
            target = self.is_target(os.readlink("/proc/self/fd/{}".format(fd)))
        except OSError:
            target = False
        if not target:
            return self.real_write(fd, data)
        return self.real_write(fd, bytes(data[:self.allow(len(data))]))

    def open(self, file, mode="r", *args, **kwargs):
        stream = self.real_open(file, mode, *args, **kwargs)
        named = isinstance(file, (str, bytes, os.PathLike))
        if named and self.is_target(file) and any(flag in mode for flag in "wax+"):
            return FillingFile(stream, self)
        return stream


class FillingFile:
    """A file object whose writes stop at the disk's budget: what fits is written and flushed, then OSError."""

    def __init__(self, stream, disk):
        self.stream = stream
        self.disk = disk

    def write(self, data):
        size = len(data.encode("utf-8") if isinstance(data, str) else data)
        allowed = self.disk.allow(size)
        if allowed < size:
            self.stream.flush()
            raw = self.stream.buffer if isinstance(data, str) else self.stream
            raw.write(data.encode("utf-8")[:allowed] if isinstance(data, str) else data[:allowed])
            raw.flush()
            raise OSError(self.disk.errno, os.strerror(self.disk.errno))
        return self.stream.write(data)

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def __iter__(self):
        return iter(self.stream)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stream.close()
        return False
