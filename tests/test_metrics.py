"""Metrics against scikit-image, and the kernel scores' invariances."""

import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from unroll import kernels, metrics


def _pair(seed, shape=(2, 40, 47, 3)):
    rng = np.random.default_rng(seed)
    x = rng.random(shape).astype(np.float32)
    y = np.clip(x + 0.1 * rng.standard_normal(shape), 0, 1).astype(np.float32)
    return x, y


@pytest.mark.parametrize("channels", [1, 3])
def test_psnr_and_ssim_match_skimage(channels):
    x, y = _pair(0, (2, 40, 47, channels))
    got_psnr = np.asarray(metrics.psnr(jnp.asarray(x), jnp.asarray(y)))
    got_ssim = np.asarray(metrics.ssim(jnp.asarray(x), jnp.asarray(y)))
    for n in range(2):
        np.testing.assert_allclose(got_psnr[n], peak_signal_noise_ratio(y[n], x[n], data_range=1.0), rtol=1e-5)
        ref = structural_similarity(x[n], y[n], data_range=1.0, channel_axis=-1, gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False)
        np.testing.assert_allclose(got_ssim[n], ref, atol=1e-5)


def test_rmse_is_on_the_255_scale():
    x, y = _pair(1)
    expected = np.sqrt(((x - y) ** 2).mean(axis=(1, 2, 3))) * 255
    np.testing.assert_allclose(np.asarray(metrics.rmse(x, y)), expected, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(metrics.rmse(x * 255, y * 255, data_range=255.0)), expected, rtol=1e-5)


def test_mnc_is_one_for_equal_and_shifted_kernels():
    k = kernels.motion(15, np.random.default_rng(3))
    shifted = np.roll(np.pad(k, 3), (2, -3), axis=(0, 1))  # larger array, shifted content
    h = jnp.asarray(np.stack([k, k]))
    np.testing.assert_allclose(np.asarray(metrics.mnc(h, h)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(float(metrics.mnc(k, shifted)[0]), 1.0, rtol=1e-5)
    other = kernels.gaussian(15, 3.0)
    value = float(metrics.mnc(k, other)[0])
    # Independent reference: brute-force normalised correlation over every shift.
    a, b = k / np.linalg.norm(k), other / np.linalg.norm(other)
    best = max((np.roll(np.pad(a, 15), (dy, dx), axis=(0, 1)) * np.pad(b, 15)).sum()
               for dy in range(-15, 16) for dx in range(-15, 16))
    np.testing.assert_allclose(value, best, rtol=1e-4)
    assert value < 0.99


def test_kernel_mse_and_rmse():
    a, b = kernels.gaussian(15, 1.0), kernels.gaussian(15, 2.0)
    np.testing.assert_allclose(float(metrics.kernel_mse(a, b)[0]), ((a - b) ** 2).mean(), rtol=1e-5)
    np.testing.assert_allclose(float(metrics.kernel_rmse(a, b)[0]), np.sqrt(((a - b) ** 2).mean()), rtol=1e-5)
    small = kernels.gaussian(11, 1.0)  # different sizes: the smaller is zero-padded about the centre
    np.testing.assert_allclose(float(metrics.kernel_mse(small, a)[0]), ((np.pad(small, 2) - a) ** 2).mean(),
                               rtol=1e-4, atol=1e-12)
