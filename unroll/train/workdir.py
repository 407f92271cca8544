"""One workdir, one writer: an advisory lock held by the training process for as long as it runs.

The lock is `fcntl.flock` on `WORKDIR/.lock`: the kernel releases it when the holder exits in any way
(kill -9 included), so it never goes stale; the file only records the holder's process id and host
so that a second process can name it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path


class WorkdirBusyError(RuntimeError):
    """Another process is training in this workdir."""


@contextlib.contextmanager
def exclusive(workdir):
    """Hold `workdir`'s lock for the duration of the block; WorkdirBusyError at once if another
    process holds it."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "another process"
            raise WorkdirBusyError(f"{workdir} is in use by {holder}; wait for it to finish or use "
                                   "another --workdir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}".encode())
        yield
    finally:
        os.close(fd)  # releases the lock
