"""Image and kernel quality metrics, one value per image.

Images are `[N, H, W, C]` (or `[H, W, C]`, treated as N = 1) with values in [0, data_range].
Kernels are `[N, kh, kw]` (or `[kh, kw]`).
"""

from __future__ import annotations

import dm_pix
import jax.numpy as jnp


def _batch(x, rank):
    x = jnp.asarray(x)
    return x[None] if x.ndim == rank - 1 else x


def mse(x, y):
    x, y = _batch(x, 4), _batch(y, 4)
    return jnp.mean((x - y) ** 2, axis=(1, 2, 3))


def psnr(x, y, data_range: float = 1.0):
    """Peak signal-to-noise ratio in dB, 10 log10(data_range^2 / MSE)."""
    return 10 * jnp.log10(data_range ** 2 / mse(x, y))


def rmse(x, y, data_range: float = 1.0):
    """Root mean squared error on the 0-255 scale used by the paper's tables."""
    return jnp.sqrt(mse(x, y)) * (255.0 / data_range)


def ssim(x, y, data_range: float = 1.0):
    """SSIM with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, averaged over channels.

    dm-pix filters with 'valid' windows, which is exactly scikit-image's
    `structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`
    (skimage pads, then discards the same border before averaging).
    """
    x, y = _batch(x, 4), _batch(y, 4)
    return dm_pix.ssim(x, y, max_val=data_range, filter_size=11, filter_sigma=1.5)


def _full_xcorr(a, b):
    """Full 2-D cross-correlation of kernel batches, every relative shift, via FFT."""
    s = (a.shape[-2] + b.shape[-2] - 1, a.shape[-1] + b.shape[-1] - 1)
    A = jnp.fft.rfft2(a, s=s, axes=(-2, -1))
    B = jnp.fft.rfft2(b, s=s, axes=(-2, -1))
    return jnp.fft.irfft2(A * jnp.conj(B), s=s, axes=(-2, -1))


def mnc(h_est, h_true):
    """Maximum of normalised cross-correlation over all shifts (Hu and Yang 2012), in [-1, 1].

    Shift-invariant, so an estimate that is right up to a translation scores 1. Kernels may differ
    in size.
    """
    a, b = _batch(h_est, 3).astype(jnp.float32), _batch(h_true, 3).astype(jnp.float32)
    norms = jnp.linalg.norm(a, axis=(-2, -1)) * jnp.linalg.norm(b, axis=(-2, -1))
    return jnp.max(_full_xcorr(a, b), axis=(-2, -1)) / jnp.maximum(norms, 1e-12)


def _common_size(a, b):
    """Zero-pad the smaller kernels symmetrically so that both batches have the same size."""
    kh, kw = max(a.shape[-2], b.shape[-2]), max(a.shape[-1], b.shape[-1])

    def pad(k):
        dh, dw = kh - k.shape[-2], kw - k.shape[-1]
        return jnp.pad(k, ((0, 0), (dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)))

    return pad(a), pad(b)


def kernel_mse(h_est, h_true):
    """Mean squared error between centred kernels (the smaller zero-padded to the larger)."""
    a, b = _common_size(_batch(h_est, 3), _batch(h_true, 3))
    return jnp.mean((a - b) ** 2, axis=(-2, -1))


def kernel_rmse(h_est, h_true):
    return jnp.sqrt(kernel_mse(h_est, h_true))
