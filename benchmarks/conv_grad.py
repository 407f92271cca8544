"""Formulations of a 3x3 convolution's weight gradient on this backend (issue: XLA:CPU's own is slow).

    python -m benchmarks.conv_grad [--shapes=1x256x256x64x64,8x64x64x16x16] [--repeats=5]

For each shape N x H x W x Cin x Cout, prints one JSON object: the forward convolution's time, the
project's input gradient's, and each weight-gradient formulation's (median ms after compilation,
GFLOP/s by 2 N H W 9 Cin Cout) with its largest difference from XLA's own gradient (`jax.vjp` of
`lax.conv_general_dilated`):

  * `xla`: JAX's rule (a b01f x b01f correlation).
  * `project`: the project's custom VJP (`unroll.models.blocks`): one 1-D convolution over the
    rows, (column, image) as features, dy stacked three times (shifted by a column) along its
    output features.
  * `swapped`: the custom VJP before it: one 2-D correlation with x's channels as the batch, the
    images as features and dy as an image-sized kernel.
  * `shifted_dots`: one GEMM per kernel tap, x's shifted window^T @ dy, contraction over N H W.
  * `im2col`: the nine windows side by side, one [9 Cin, NHW] @ [NHW, Cout] GEMM.
  * `blocked_im2col`: the same with the N H W contraction split into row blocks (a batched GEMM,
    then a sum), so that each block's operands stay in cache.

With PyTorch installed, `torch` gives eager PyTorch's forward, weight gradient and input gradient
(`aten.convolution_backward`) for the same shape, on as many threads as JAX has cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.ops import time_ms
from unroll import hostmem
from unroll.models import blocks

NHWC = ("NHWC", "HWIO", "NHWC")
PAD = ((1, 1), (1, 1))


def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), PAD, dimension_numbers=NHWC)


def dw_xla(x, w, dy):
    return jax.vjp(lambda w: conv(x, w), w)[1](dy)[0]


def dw_project(x, w, dy):
    return jax.vjp(lambda w: blocks.conv_general_dilated(x, w, (1, 1), PAD, dimension_numbers=NHWC),
                   w)[1](dy)[0]


def dw_swapped(x, w, dy):
    xt = jnp.transpose(x, (3, 1, 2, 0))  # [Cin, H, W, N]: channels as the batch, images as features
    dw = jax.lax.conv_general_dilated(xt, jnp.transpose(dy, (1, 2, 0, 3)), (1, 1), PAD,
                                      dimension_numbers=NHWC)
    return jnp.transpose(dw, (1, 2, 0, 3))


def dx_project(x, w, dy):
    """The input gradient of the project's convolution (its custom VJP on CPU)."""
    return jax.vjp(lambda x: blocks.conv_general_dilated(x, w, (1, 1), PAD, dimension_numbers=NHWC),
                   x)[1](dy)[0]


def _windows(x, h, w):
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return [xp[:, a:a + h, b:b + w, :] for a in range(3) for b in range(3)]


def dw_shifted_dots(x, w, dy):
    n, h, wd, cin = x.shape
    rows = dy.reshape(-1, dy.shape[-1])
    taps = [win.reshape(-1, cin).T @ rows for win in _windows(x, h, wd)]
    return jnp.stack(taps).reshape(3, 3, cin, -1)


def dw_im2col(x, w, dy):
    n, h, wd, cin = x.shape
    cols = jnp.concatenate(_windows(x, h, wd), axis=-1).reshape(-1, 9 * cin)
    return (cols.T @ dy.reshape(-1, dy.shape[-1])).reshape(3, 3, cin, -1)


def dw_blocked_im2col(x, w, dy, block: int = 4096):
    n, h, wd, cin = x.shape
    cols = jnp.concatenate(_windows(x, h, wd), axis=-1).reshape(-1, 9 * cin)
    rows = dy.reshape(-1, dy.shape[-1])
    m = cols.shape[0]
    if m % block:
        return dw_im2col(x, w, dy)
    partial = jnp.einsum("bmi,bmo->bio", cols.reshape(m // block, block, -1),
                         rows.reshape(m // block, block, -1))
    return partial.sum(0).reshape(3, 3, cin, -1)


FORMULATIONS = {"xla": dw_xla, "project": dw_project, "swapped": dw_swapped, "shifted_dots": dw_shifted_dots,
                "im2col": dw_im2col, "blocked_im2col": dw_blocked_im2col}


def torch_times(shape: tuple[int, ...], repeats: int) -> dict:
    """Eager PyTorch: median ms of the forward, the weight gradient and the input gradient."""
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    n, h, wd, cin, cout = shape
    x, dy = torch.randn(n, cin, h, wd), torch.randn(n, cout, h, wd)
    w = torch.randn(cout, cin, 3, 3)

    def backward(mask):
        return lambda: torch.ops.aten.convolution_backward(
            dy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)

    def median_ms(fn):
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return round(1e3 * sorted(times)[len(times) // 2], 2)

    with torch.no_grad():
        return {"version": torch.__version__,
                "forward_ms": median_ms(lambda: torch.nn.functional.conv2d(x, w, padding=1)),
                "weight_grad_ms": median_ms(backward([False, True, False])),
                "input_grad_ms": median_ms(backward([True, False, False]))}


def measure(shape: tuple[int, ...], repeats: int) -> dict:
    n, h, wd, cin, cout = shape
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, h, wd, cin)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, cin, cout)) / np.sqrt(9 * cin), jnp.float32)
    dy = jnp.asarray(rng.standard_normal((n, h, wd, cout)), jnp.float32)
    gflop = 2 * n * h * wd * 9 * cin * cout / 1e9
    out = {"shape": "x".join(map(str, shape)), "backend": jax.default_backend(),
           "forward_ms": round(time_ms(jax.jit(conv), x, w, repeats=repeats), 2),
           "input_grad_ms": round(time_ms(jax.jit(dx_project), x, w, dy, repeats=repeats), 2)}
    reference = np.asarray(jax.jit(dw_xla)(x, w, dy))
    for name, fn in FORMULATIONS.items():
        f = jax.jit(fn)
        ms = time_ms(f, x, w, dy, repeats=repeats)
        err = float(np.max(np.abs(np.asarray(f(x, w, dy)) - reference)) / np.max(np.abs(reference)))
        out[name] = {"ms": round(ms, 2), "gflop_s": round(gflop / (ms / 1e3), 1), "rel_err": err}
    try:
        out["torch"] = torch_times(shape, repeats)
    except ImportError:
        print("conv_grad: torch is not installed, skipping its timings", file=sys.stderr)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="1x256x256x64x64,8x64x64x16x16")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    print(json.dumps([measure(s, args.repeats) for s in shapes], indent=1))


if __name__ == "__main__":
    hostmem.configure()  # reuse XLA:CPU's per-step buffers (unroll/hostmem.py)
    main()
