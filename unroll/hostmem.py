"""Host memory on XLA:CPU: each step's buffers are reused, not faulted in again.

XLA:CPU allocates each execution's temporary buffer afresh and frees it at the end: about 250 MB
for the demo train step, several GB at the paper size. By default it runs the execution on a worker
thread, whose glibc arena serves blocks this large with mmap and gives them back with munmap, so
every step faults its whole working set in again: 63 000-79 000 page faults per demo step, 1.1-1.3
million per paper step, 3-7 CPU-seconds of kernel time per paper step on the 2-core VM the README's
figures come from (`benchmarks.train_step` records them).

`configure()` runs executions on the calling thread (JAX's synchronous CPU dispatch) and tells glibc
never to mmap a block nor give the heap's top back: the main thread's heap then keeps the freed
buffers, and a step faults nothing after the first. It is process-wide, so the entry points
(`python -m experiments.*`, `python -m benchmarks.*`) call it and the library never does; set
UNROLL_MALLOC_TUNING=0 to keep glibc's and JAX's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

ENV = "UNROLL_MALLOC_TUNING"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters, <malloc.h>


def applies() -> bool:
    """Whether `configure()` would change anything: Linux with glibc, not opted out."""
    return (os.environ.get(ENV) != "0" and sys.platform == "linux"
            and platform.libc_ver()[0] == "glibc")


def configure() -> bool:
    """Set up glibc and JAX as the module docstring says when JAX runs on the CPU; returns whether
    it did. Call it before JAX starts its backend (before the first computation)."""
    if not applies():
        return False
    import jax

    # Read when the CPU client starts, so set before jax.default_backend() starts it; it only
    # concerns the CPU client, so it is harmless where the backend turns out to be a GPU.
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    if jax.default_backend() != "cpu":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, -1))  # -1: never trim
