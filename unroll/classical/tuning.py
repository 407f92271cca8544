"""Tuning the classical unrolled solver's per-iteration parameters by gradient descent through its
iterations (jax.grad of -PSNR), on synthetic pairs from the built-in photos."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from unroll import ops
from unroll.classical.unrolled import _check_params, solve


def make_training_pairs(count: int, patch: int = 96, kernel_size: int = 27, *, seed: int = 0,
                        noise: float = 0.01, motion_prob: float = 0.75,
                        sigma_range: tuple[float, float] = (0.5, 3.0), split: str = "train",
                        candidates: int = 4) -> dict:
    """Synthetic grayscale pairs from the built-in samples (host numpy, deterministic in `seed`).

    Each pair: a `patch`^2 crop of the next built-in image (of `candidates` random crops, the one
    with the most gradient energy, so that few crops are flat sky), blurred by a random camera-shake
    kernel (`unroll.kernels.motion`, probability `motion_prob`) or an isotropic Gaussian with sigma
    in `sigma_range`, both `kernel_size`^2, symmetric boundary, plus Gaussian noise of std `noise`.
    Returns {"blurred", "sharp": [count, patch, patch, 1], "kernel": [count, k, k]} (float32).
    """
    from unroll import data  # host-side pipeline, only needed here

    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    source = data.builtin_samples(split, channels=1)
    degradation = data.Degradation(kernel_size, tuple(sigma_range), float(noise), motion_prob)
    rng = np.random.default_rng(seed)
    out = {"blurred": [], "sharp": [], "kernel": []}
    for i in range(count):
        image = source[i % len(source)]["image"]
        H, W = image.shape[:2]
        if min(H, W) < patch:
            raise ValueError(f"built-in image {source.names[i % len(source)]} is smaller than {patch}")
        crops = []
        for _ in range(candidates):
            y, x = int(rng.integers(0, H - patch + 1)), int(rng.integers(0, W - patch + 1))
            crop = image[y:y + patch, x:x + patch]
            crops.append((float(np.mean(np.diff(crop, axis=0) ** 2) + np.mean(np.diff(crop, axis=1) ** 2)),
                          crop))
        sharp = max(crops, key=lambda c: c[0])[1]
        blurred, kernel = degradation(np.ascontiguousarray(sharp), rng)
        out["blurred"].append(blurred)
        out["sharp"].append(sharp)
        out["kernel"].append(kernel)
    return {k: np.stack(v).astype(np.float32) for k, v in out.items()}


def loss(params, blurred, sharp, *, iterations: int, kernel_size: int, border: int | None = None,
         kernel_weight: float = 0.0, **solver_options):
    """Training loss through the unrolled solver: mean over images of -PSNR(u, sharp) in dB on the
    interior (a `border`, default kernel_size // 2, is ignored: blind deconvolution cannot know the
    scene outside the frame) plus `kernel_weight` times the mean of 10 log10 MSE(h * sharp, blurred),
    the data consistency of the estimated kernel (MGSTNet's kernel loss, eq. 22, in squared form).
    Averaging log-MSE rather than MSE keeps the easy images from being ignored."""
    u, h = solve(blurred, params, iterations, kernel_size, **solver_options)
    b = kernel_size // 2 if border is None else border
    crop = (slice(None), slice(b, sharp.shape[1] - b), slice(b, sharp.shape[2] - b))
    mse = jnp.mean((u[crop] - sharp[crop]) ** 2, axis=(1, 2, 3))
    value = jnp.mean(10 * jnp.log10(mse + 1e-10))
    if kernel_weight:
        k_mse = jnp.mean((ops.blur(sharp, h)[crop] - blurred[crop]) ** 2, axis=(1, 2, 3))
        value = value + kernel_weight * jnp.mean(10 * jnp.log10(k_mse + 1e-10))
    return value


def tune(params, train_pairs, steps: int, lr: float = 0.02, *, kernel_size: int,
         batch_size: int | None = None, seed: int = 0, kernel_weight: float = 0.0,
         border: int | None = None, log_every: int = 0, callback=None, **solver_options):
    """Fit the raw `params` with optax Adam on `loss` by jax.grad through the unrolled iterations.

    `train_pairs`: {"blurred", "sharp": [N, H, W, C]} (e.g. `make_training_pairs`); each step uses
    `batch_size` pairs drawn without replacement (all when None). The solver runs with
    `remat=True` (each iteration recomputed in the backward pass: memory linear in the carry only)
    unless `solver_options` say otherwise. Returns `(params, history)`, history the batch loss before
    every step. `callback(step, loss)` is called every `log_every` steps.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    _, iterations, _ = _check_params(params)
    blurred = jnp.asarray(train_pairs["blurred"])
    sharp = jnp.asarray(train_pairs["sharp"])
    if blurred.shape != sharp.shape or blurred.ndim != 4:
        raise ValueError(f"blurred and sharp must be equal [N, H, W, C] arrays, got "
                         f"{blurred.shape} and {sharp.shape}")
    n = blurred.shape[0]
    batch = n if batch_size is None else min(batch_size, n)
    solver_options = {"remat": True, **solver_options}
    objective_fn = functools.partial(loss, iterations=iterations, kernel_size=kernel_size,
                                     border=border, kernel_weight=kernel_weight, **solver_options)
    optimizer = optax.adam(lr)

    @jax.jit
    def update(params, opt_state, b, s):
        value, grads = jax.value_and_grad(objective_fn)(params, b, s)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    rng = np.random.default_rng(seed)
    opt_state = optimizer.init(params)
    history = []
    for step in range(steps):
        idx = np.sort(rng.choice(n, batch, replace=False)) if batch < n else np.arange(n)
        params, opt_state, value = update(params, opt_state, blurred[idx], sharp[idx])
        history.append(float(value))
        if callback is not None and log_every and step % log_every == 0:
            callback(step, history[-1])
    return params, history
