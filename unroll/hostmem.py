"""Host memory on XLA:CPU: each step's buffers are reused, not faulted in again.

XLA:CPU allocates each execution's temporary buffer afresh and frees it at the end: about 250 MB
for the demo train step, several GB at the paper size. By default it runs the execution on a worker
thread, whose glibc arena serves blocks this large with mmap and gives them back with munmap, so
every step faults its whole working set in again: about 79 000 page faults per demo step and 1.3
million per paper step, seconds of kernel time per paper step on the 2-core VM the README's figures
come from (`benchmarks.train_step` reports both per step).

`configure()` runs executions on the calling thread (JAX's synchronous CPU dispatch) and tells glibc
never to mmap a block nor give the heap's top back: the main thread's heap then keeps the freed
buffers, and a step faults nothing after the first. It is process-wide, so the entry points
(`python -m experiments.*`, `python -m benchmarks.*`) call it and the library never does; set
UNROLL_MALLOC_TUNING=0 to keep glibc's and JAX's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import os
import platform
import sys

ENV = "UNROLL_MALLOC_TUNING"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters, <malloc.h>
_ACCELERATORS = ("jax-cuda", "jax-rocm", "libtpu")  # plugin distributions: JAX would not run on the CPU


def applies() -> bool:
    """Whether `configure()` would change anything: Linux with glibc, not opted out, and JAX will
    run on the CPU (JAX_PLATFORMS names no other backend, no accelerator plugin is installed).
    Decided without starting JAX's backend, which jax.distributed.initialize() must come before."""
    if os.environ.get(ENV) == "0" or sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    if os.environ.get("JAX_PLATFORMS", "").split(",")[0].strip() not in ("", "cpu"):
        return False
    return not any((dist.metadata["Name"] or "").lower().replace("_", "-").startswith(_ACCELERATORS)
                   for dist in importlib.metadata.distributions())


def configure() -> bool:
    """Set up glibc and JAX as the module docstring says; returns whether it did. Call it before
    the first computation (its JAX option is read when the CPU client starts)."""
    if not applies():
        return False
    import jax

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not (libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, -1)):  # -1: never trim
        return False
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    return True
