"""Image and kernel quality metrics, one value per image.

Images are `[N, H, W, C]` (or `[H, W, C]`, treated as N = 1) with values in [0, data_range].
Kernels are `[N, kh, kw]` (or `[kh, kw]`).
"""

from __future__ import annotations

import jax.numpy as jnp


def _batch(x, rank):
    x = jnp.asarray(x)
    return x[None] if x.ndim == rank - 1 else x


def mse(x, y):
    """Mean squared error per image, `[N]`.

    >>> import jax.numpy as jnp
    >>> x = jnp.zeros((2, 4, 4, 3))
    >>> [round(v, 6) for v in mse(x, x.at[1].set(0.5)).tolist()]
    [0.0, 0.25]
    """
    x, y = _batch(x, 4), _batch(y, 4)
    return jnp.mean((x - y) ** 2, axis=(1, 2, 3))


def psnr(x, y, data_range: float = 1.0):
    """Peak signal-to-noise ratio in dB, 10 log10(data_range^2 / MSE).

    >>> import jax.numpy as jnp
    >>> x = jnp.full((1, 8, 8, 3), 0.5)
    >>> [round(v, 3) for v in psnr(x, x + 0.1).tolist()]  # MSE 0.01: 20 dB
    [20.0]
    >>> [round(v, 3) for v in psnr(255 * x, 255 * x + 25.5, data_range=255.0).tolist()]
    [20.0]
    """
    return 10 * jnp.log10(data_range ** 2 / mse(x, y))


def rmse(x, y, data_range: float = 1.0):
    """Root mean squared error on the 0-255 scale used by the paper's tables.

    >>> import jax.numpy as jnp
    >>> x = jnp.full((1, 8, 8, 3), 0.5)
    >>> [round(v, 3) for v in rmse(x, x + 0.1).tolist()]  # 0.1 on [0, 1] is 25.5 on [0, 255]
    [25.5]
    """
    return jnp.sqrt(mse(x, y)) * (255.0 / data_range)


def ssim(x, y, data_range: float = 1.0):
    """SSIM with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, averaged over channels.

    dm-pix filters with 'valid' windows, which is exactly scikit-image's
    `structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`
    (skimage pads, then discards the same border before averaging).

    >>> import jax, jax.numpy as jnp
    >>> x = jax.random.uniform(jax.random.key(0), (16, 16, 3))  # one [H, W, C] image: N = 1
    >>> ssim(x, x).shape, round(float(ssim(x, x)[0]), 4)
    ((1,), 1.0)
    >>> bool(ssim(x, 0.5 * x)[0] < 1)
    True
    """
    x, y = _batch(x, 4), _batch(y, 4)
    import dm_pix  # imported here: the metrics module itself needs only JAX

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

    >>> import numpy as np
    >>> from unroll import kernels
    >>> h = kernels.gaussian(15, 1.5)
    >>> shifted = np.roll(h, (2, -1), axis=(0, 1))  # the Gaussian's tails are ~0 at the border
    >>> round(float(mnc(shifted, h)[0]), 4), round(float(mnc(kernels.uniform(15), h)[0]), 2)
    (1.0, 0.35)
    >>> round(float(mnc(kernels.gaussian(9, 1.5), h)[0]), 4)  # sizes may differ
    1.0
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
    """Mean squared error between centred kernels (the smaller zero-padded to the larger).

    >>> from unroll import kernels
    >>> [round(v, 6) for v in kernel_mse(kernels.delta(3), kernels.delta(5)).tolist()]
    [0.0]
    >>> [round(v, 4) for v in kernel_mse(kernels.delta(3), kernels.delta(3, shift=(0, 1))).tolist()]
    [0.2222]
    """
    a, b = _common_size(_batch(h_est, 3), _batch(h_true, 3))
    return jnp.mean((a - b) ** 2, axis=(-2, -1))


def kernel_rmse(h_est, h_true):
    """Root of `kernel_mse`.

    >>> from unroll import kernels
    >>> [round(v, 4) for v in kernel_rmse(kernels.delta(3), kernels.delta(3, shift=(0, 1))).tolist()]
    [0.4714]
    """
    return jnp.sqrt(kernel_mse(h_est, h_true))
