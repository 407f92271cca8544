"""Orthonormal multi-level 2-D Haar transform on NHWC images of any size: the sparsifying transform of
the classical image prior (`unroll.classical.unrolled.wavelet_prox`) and of MGSTNet's `haar_gst`
image prior (`unroll.models.priors.HaarGST`). Pure JAX (maths layer), so both can use it."""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

_SQRT_HALF = 1.0 / math.sqrt(2.0)


def _split(x, axis):
    """One orthonormal 1-D Haar step along `axis`: (approximation, detail).

    Pairs (a, b) -> ((a + b) / sqrt2, (a - b) / sqrt2); an odd last sample passes through to the
    approximation unchanged, so the step is orthonormal for every length.
    """
    n = x.shape[axis]
    m = n // 2
    pairs = lax.slice_in_dim(x, 0, 2 * m, axis=axis)
    pairs = pairs.reshape(pairs.shape[:axis] + (m, 2) + pairs.shape[axis + 1:])
    a0 = lax.index_in_dim(pairs, 0, axis + 1, keepdims=False)
    a1 = lax.index_in_dim(pairs, 1, axis + 1, keepdims=False)
    approx, detail = (a0 + a1) * _SQRT_HALF, (a0 - a1) * _SQRT_HALF
    if n % 2:
        approx = jnp.concatenate([approx, lax.slice_in_dim(x, 2 * m, n, axis=axis)], axis=axis)
    return approx, detail


def _merge(approx, detail, axis):
    """Inverse (= transpose) of `_split`."""
    m = detail.shape[axis]
    a = lax.slice_in_dim(approx, 0, m, axis=axis)
    x = jnp.stack([(a + detail) * _SQRT_HALF, (a - detail) * _SQRT_HALF], axis=axis + 1)
    x = x.reshape(x.shape[:axis] + (2 * m,) + x.shape[axis + 2:])
    if approx.shape[axis] > m:
        x = jnp.concatenate([x, lax.slice_in_dim(approx, m, approx.shape[axis], axis=axis)], axis=axis)
    return x


def haar_forward(x, levels: int = 3):
    """Orthonormal `levels`-level 2-D Haar transform of `[N, H, W, C]` images.

    Returns `(approx, details)`: the coarsest approximation band and a tuple over levels (finest
    first) of `(LH, HL, HH)` detail bands. Odd sizes are handled by passing the last row / column
    on to the next level's approximation, so the transform is orthonormal for any H, W.

    >>> import jax, jax.numpy as jnp
    >>> x = jax.random.normal(jax.random.key(0), (1, 9, 6, 2))
    >>> approx, details = haar_forward(x, levels=2)
    >>> approx.shape, [d[0].shape for d in details]
    ((1, 3, 2, 2), [(1, 5, 3, 2), (1, 3, 1, 2)])
    >>> bool(jnp.allclose(haar_inverse(approx, details), x, atol=1e-6))  # orthonormal: exact inverse
    True
    """
    details = []
    for _ in range(levels):
        lo, hi = _split(x, 1)
        ll, lh = _split(lo, 2)
        hl, hh = _split(hi, 2)
        details.append((lh, hl, hh))
        x = ll
    return x, tuple(details)


def haar_inverse(approx, details):
    """Exact inverse of `haar_forward`, which is also its transpose (orthonormality)."""
    x = approx
    for lh, hl, hh in reversed(details):
        x = _merge(_merge(x, lh, 2), _merge(hl, hh, 2), 1)
    return x


