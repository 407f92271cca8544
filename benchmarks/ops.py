"""Speed of the pure operators: FFT blur and adjoints, the unrolled steps, GST against soft threshold.

    python -m benchmarks.ops [--batch=8 --size=256 --channels=3 --kernel=15]

Prints one JSON object: milliseconds per call (median over repeats, after compilation) and ratios.
`gst_over_soft` is the paper's solver (3 fixed-point steps of eq. 20), `gst_halley_over_soft` the
one-Halley-step solver (`--gst_solver=halley`); near 1 would mean a memory-bound, fused kernel;
`gst_grad_over_soft_grad` compares the gradients in y; `gst_grad_all_ms` and `gst_implicit_grad_all_ms`
time the gradient in y, theta and p together (what training computes), unrolled and implicit, and
`gst_halley_grad_all_ms` / `gst_halley_implicit_grad_all_ms` the same for the Halley solver.
`power_ms` is one power per element, `(|y| + delta)^(p - 1)` by `unroll.fastmath` (what GST uses),
`xla_power_ms` the same by XLA's exp and log: a GST solver costs at least one power. `power_chain3_ms`
(three powers, each of the previous one) against `power_indep3_ms` (three of y) shows that XLA:CPU
runs a fused elementwise loop at the latency of its dependent chain: the fixed-point solver's case.
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from unroll import fastmath, hostmem, kernels, ops, shrinkage, steps


def time_ms(fn, *args, repeats: int = 10) -> float:
    """Median wall time of a compiled call in milliseconds."""
    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def direct_blur(u, h):
    """Spatial-domain reference: symmetric padding and a depthwise lax convolution per image."""
    n, H, W, c = u.shape
    k = h.shape[-1]
    x = jnp.pad(u, ((0, 0), (k // 2,) * 2, (k // 2,) * 2, (0, 0)), mode="symmetric")
    x = jnp.transpose(x, (1, 2, 0, 3)).reshape(1, H + k - 1, W + k - 1, n * c)
    w = jnp.repeat(h[:, ::-1, ::-1], c, axis=0)  # flip: lax correlates, blur convolves
    w = jnp.transpose(w, (1, 2, 0))[:, :, None, :]  # HWIO with one input per group
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", feature_group_count=n * c,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.transpose(y.reshape(H, W, n, c), (2, 0, 1, 3))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--kernel", type=int, default=15)
    parser.add_argument("--features", type=int, default=64, help="channels of the GST benchmark tensor")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    shape = (args.batch, args.size, args.size, args.channels)
    u = jnp.asarray(rng.random(shape), jnp.float32)
    h = jnp.asarray(np.stack([kernels.gaussian(args.kernel, 0.5 + i % 4) for i in range(args.batch)]))
    g = ops.blur(u, h)
    r = jnp.asarray(rng.standard_normal(shape), jnp.float32)

    blur = jax.jit(ops.blur)
    direct = jax.jit(direct_blur)
    np.testing.assert_allclose(np.asarray(blur(u, h)), np.asarray(direct(u, h)), atol=1e-4)
    results = {
        "device": str(jax.devices()[0].platform),
        "image_shape": list(shape),
        "kernel_size": args.kernel,
        "blur_fft_ms": time_ms(blur, u, h, repeats=args.repeats),
        "blur_direct_conv_ms": time_ms(direct, u, h, repeats=args.repeats),
        "blur_adjoint_ms": time_ms(jax.jit(ops.blur_adjoint), r, h, repeats=args.repeats),
        "kernel_adjoint_ms": time_ms(jax.jit(ops.kernel_adjoint, static_argnums=2), u, r, h.shape,
                                     repeats=args.repeats),
        "kernel_step_ms": time_ms(jax.jit(steps.kernel_step), h, u, g, 0.1, repeats=args.repeats),
        "image_step_ms": time_ms(jax.jit(steps.image_step), u, h, g, 1.0, repeats=args.repeats),
    }
    results["direct_over_fft"] = results["blur_direct_conv_ms"] / results["blur_fft_ms"]

    feats = jnp.asarray(rng.standard_normal((args.batch, args.size // 2, args.size // 2, args.features)),
                        jnp.float32)
    theta = jnp.full((args.features,), 0.3)
    p = jnp.full((args.features,), 0.6)
    results["gst_shape"] = list(feats.shape)
    results["soft_threshold_ms"] = time_ms(jax.jit(shrinkage.soft_threshold), feats, theta, repeats=args.repeats)
    results["gst_ms"] = time_ms(jax.jit(shrinkage.gst), feats, theta, p, repeats=args.repeats)
    results["gst_over_soft"] = results["gst_ms"] / results["soft_threshold_ms"]
    halley = functools.partial(shrinkage.gst, iterations=1, solver="halley")
    results["gst_halley_ms"] = time_ms(jax.jit(halley), feats, theta, p, repeats=args.repeats)
    results["gst_halley_over_soft"] = results["gst_halley_ms"] / results["soft_threshold_ms"]
    # Fusion check: how many kernels of the compiled GST write a full-size tensor (1 = fully fused).
    full = "f32[" + ",".join(map(str, feats.shape)) + "]"
    for name, fn in (("gst", shrinkage.gst), ("gst_halley", halley)):
        hlo = jax.jit(fn).lower(feats, theta, p).compile().as_text()
        results[f"{name}_full_size_kernels"] = sum(
            1 for line in hlo.splitlines() if "ENTRY" not in line and f"= {full}" in line and " fusion(" in line)
    # The floor of any solver, one power per element, and chained against independent powers.
    def xla_power(x, e):
        return jnp.exp(e * jnp.log(x))

    def chain3(y, e):
        x = jnp.abs(y) + 1e-5
        for _ in range(3):
            x = xla_power(x, e) + 1e-5
        return x

    def indep3(y, e):
        x = jnp.abs(y) + 1e-5
        return xla_power(x, e) + xla_power(x, e - 0.1) + xla_power(x, e - 0.2)

    e = p - 1
    results["power_ms"] = time_ms(jax.jit(lambda y, e: fastmath.power(jnp.abs(y) + 1e-5, e)), feats, e,
                                  repeats=args.repeats)
    results["xla_power_ms"] = time_ms(jax.jit(lambda y, e: xla_power(jnp.abs(y) + 1e-5, e)), feats, e,
                                      repeats=args.repeats)
    results["power_over_soft"] = results["power_ms"] / results["soft_threshold_ms"]
    results["power_chain3_ms"] = time_ms(jax.jit(chain3), feats, e, repeats=args.repeats)
    results["power_indep3_ms"] = time_ms(jax.jit(indep3), feats, e, repeats=args.repeats)
    grad_soft = jax.jit(jax.grad(lambda y, t: jnp.sum(shrinkage.soft_threshold(y, t) ** 2)))
    grad_gst = jax.jit(jax.grad(lambda y, t, p: jnp.sum(shrinkage.gst(y, t, p) ** 2)))
    results["soft_threshold_grad_ms"] = time_ms(grad_soft, feats, theta, repeats=args.repeats)
    results["gst_grad_ms"] = time_ms(grad_gst, feats, theta, p, repeats=args.repeats)
    results["gst_grad_over_soft_grad"] = results["gst_grad_ms"] / results["soft_threshold_grad_ms"]
    # What training differentiates: y, theta and p together (unrolled, and the implicit alternative).
    halley_implicit = functools.partial(shrinkage.gst_implicit, iterations=1, solver="halley")
    for name, fn in (("gst", shrinkage.gst), ("gst_implicit", shrinkage.gst_implicit),
                     ("gst_halley", halley), ("gst_halley_implicit", halley_implicit)):
        grad_all = jax.jit(jax.grad(lambda y, t, p, fn=fn: jnp.sum(fn(y, t, p) ** 2), argnums=(0, 1, 2)))
        results[f"{name}_grad_all_ms"] = time_ms(grad_all, feats, theta, p, repeats=args.repeats)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    hostmem.configure()  # reuse XLA:CPU's per-step buffers (unroll/hostmem.py)
    main()
