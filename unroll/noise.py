"""Noise level of an image: the standard deviation of additive white Gaussian noise, on [0, 1].

The estimator is Chen, Zhu and Heng's (ICCV 2015, "An efficient statistical method for image noise
level estimation"): the eigenvalues of the covariance of the image's 7x7 patches. Natural images,
and blurred ones most of all, fill a low-dimensional part of patch space; white noise of std sigma
adds sigma^2 to every eigenvalue. Sorted in decreasing order, the eigenvalues of the tail that only
noise fills have a mean equal to their median; the first tail (from the largest down) whose mean
is at most its median gives sigma^2 as that mean. Each patch's own mean is removed first (the
constant direction holds most of the signal and would cost float32 its precision), and so one zero
eigenvalue is dropped. On the blurred RSSCN7 test scenes it is within 1 % of the true std from
0.5 % up (`benchmarks/noise_estimate.py`); on sharp textured scenes it reads high. A
median-absolute-deviation estimate on the finest diagonal Haar band (Donoho's) was up to 40 % high
on textured scenes at 0.5 %.

Pure JAX and jit-able: MGSTNet's noise-conditional variant calls `estimate_batch` on its input.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

PATCH = 7
# Positions sampled at most (a stride on large images): the covariance of 49 dimensions is settled
# long before, and memory stays bounded whatever the image size.
MAX_PATCHES = 65536


def _tail_noise_variance(eigenvalues):
    """sigma^2 from eigenvalues sorted in decreasing order `[..., r]`: the mean of the first tail
    lambda_i..lambda_r whose mean is at most its median (the last tail, one value, always is)."""
    r = eigenvalues.shape[-1]
    counts = jnp.arange(r, 0, -1)  # tail lengths r - i
    means = jnp.flip(jnp.cumsum(jnp.flip(eigenvalues, -1), -1), -1) / counts
    i = jnp.arange(r)
    lo, hi = i + (counts - 1) // 2, i + counts // 2  # a tail's middle element(s)
    medians = (jnp.take(eigenvalues, lo, axis=-1) + jnp.take(eigenvalues, hi, axis=-1)) / 2
    first = jnp.argmax(means <= medians, axis=-1)
    return jnp.take_along_axis(means, first[..., None], axis=-1)[..., 0]


def estimate_batch(images):
    """Noise std per image of `[N, H, W, C]` images (float, at least 7x7): `[N]`, the mean over bands
    of each band's estimate. Jit-able; no gradient flows through it (a conditioning input).

    >>> import jax, jax.numpy as jnp
    >>> smooth = jnp.broadcast_to(jnp.linspace(0, 1, 128)[None, :, None, None], (2, 128, 128, 1))
    >>> noisy = smooth + jnp.array([0.01, 0.05])[:, None, None, None] * jax.random.normal(
    ...     jax.random.key(0), smooth.shape)
    >>> [round(float(s), 2) for s in estimate_batch(noisy)]
    [0.01, 0.05]
    """
    images = jnp.asarray(images)
    if images.ndim != 4 or min(images.shape[1:3]) < PATCH:
        raise ValueError(f"expected images [N, H, W, C] with H, W >= {PATCH}, got {images.shape}")
    n, h, w, c = images.shape
    positions = (h - PATCH + 1) * (w - PATCH + 1)
    stride = max(1, math.ceil(math.sqrt(positions / MAX_PATCHES)))
    x = jax.lax.stop_gradient(images).astype(jnp.float32).transpose(0, 3, 1, 2).reshape(n * c, h, w, 1)
    patches = jax.lax.conv_general_dilated_patches(
        x, (PATCH, PATCH), (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST).reshape(n * c, -1, PATCH * PATCH)
    patches = patches - patches.mean(axis=-1, keepdims=True)
    patches = patches - patches.mean(axis=1, keepdims=True)
    covariance = jnp.einsum("bmi,bmj->bij", patches, patches,
                            precision=jax.lax.Precision.HIGHEST) / patches.shape[1]
    eigenvalues = jnp.flip(jnp.linalg.eigvalsh(covariance), -1)[..., :-1]  # drop the patch mean's 0
    variance = _tail_noise_variance(jnp.maximum(eigenvalues, 0.0))
    return jnp.sqrt(variance).reshape(n, c).mean(axis=-1)


def estimate(image) -> float:
    """The noise standard deviation of one image on the [0, 1] scale: `[H, W]` (gray) or
    `[H, W, C]` (the mean over bands). Unsigned integers are scaled by their largest value.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> clean = np.tile(np.linspace(0, 1, 200, dtype=np.float32), (200, 1))
    >>> round(estimate(clean + 0.02 * rng.standard_normal(clean.shape)), 3)
    0.02
    >>> estimate(np.zeros((1, 1)))
    Traceback (most recent call last):
    ...
    ValueError: noise.estimate needs an image [H, W] or [H, W, C] of at least 7x7 pixels, got shape (1, 1)
    """
    array = np.asarray(image)
    if array.ndim not in (2, 3) or min(array.shape[:2]) < PATCH:
        raise ValueError("noise.estimate needs an image [H, W] or [H, W, C] of at least 7x7 pixels, "
                         f"got shape {array.shape}")
    if np.issubdtype(array.dtype, np.unsignedinteger):
        array = array / float(np.iinfo(array.dtype).max)
    array = np.asarray(array, np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    return float(estimate_batch(array[None])[0])
