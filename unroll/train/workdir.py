"""One workdir, one writer: an advisory lock held by the training process for as long as it runs.

The lock is `unroll.atomic.exclusive` (`fcntl.flock` on `WORKDIR/.lock`, the one deblurring holds on
its output folder): the kernel releases it when the holder exits in any way (kill -9 included), so it
never goes stale; the file only records the holder's process id and host so that a second process
can name it.
"""

from __future__ import annotations

from unroll import atomic

WorkdirBusyError = atomic.FolderBusyError  # another process is training in this workdir


def exclusive(workdir):
    """Hold `workdir`'s lock for the duration of the block; WorkdirBusyError at once if another
    process holds it."""
    return atomic.exclusive(workdir, "--workdir")
