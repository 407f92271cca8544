"""This machine's single-precision matrix-multiply (sgemm) rate: the peak that the train step's
achieved GFLOP/s is compared with.

    python -m benchmarks.gemm [--size=2048] [--repeats=5]

Prints JSON: GFLOP/s of an N x N x N float32 matmul with numpy (its BLAS) and with jax.jit (XLA:CPU),
best of `repeats`, and `peak_gflop_per_s`, the larger of the two. 2 N^3 FLOPs per product.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np


def best_seconds(fn, repeats: int) -> float:
    fn()  # warm up (thread pools, compilation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    n = args.size
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)
    flops = 2.0 * n ** 3
    numpy_s = best_seconds(lambda: a @ b, args.repeats)
    matmul = jax.jit(jnp.matmul)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    jax_s = best_seconds(lambda: matmul(ja, jb).block_until_ready(), args.repeats)
    result = {"size": n, "threads": os.cpu_count(), "device": jax.devices()[0].platform,
              "numpy_gflop_per_s": round(flops / numpy_s / 1e9, 1),
              "jax_gflop_per_s": round(flops / jax_s / 1e9, 1)}
    result["peak_gflop_per_s"] = max(result["numpy_gflop_per_s"], result["jax_gflop_per_s"])
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
