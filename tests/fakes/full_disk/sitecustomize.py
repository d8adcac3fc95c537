"""Installs full_disk.FullDisk in a child process (tests put this folder on PYTHONPATH): FULL_DISK_PREFIX names the
files, FULL_DISK_WHOLE_WRITES how many writes succeed, FULL_DISK_ERRNO the error (default ENOSPC); only where RANK
is FULL_DISK_RANK (default 0) or unset."""
import errno
import os

if os.environ.get("FULL_DISK_PREFIX") and os.environ.get("RANK", "0") == os.environ.get("FULL_DISK_RANK", "0"):
    from full_disk import FullDisk

    FullDisk(os.environ["FULL_DISK_PREFIX"], int(os.environ.get("FULL_DISK_WHOLE_WRITES", "0")),
             getattr(errno, os.environ.get("FULL_DISK_ERRNO", "ENOSPC"))).install()
