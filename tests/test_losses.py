"""Losses against plain numpy / scipy references (paper eqs. 21-23)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.signal import convolve2d

from unroll import kernels, losses
from unroll.models import MGSTNetOutput

EPS = 1e-3


def _images(rng, n=2, h=12, w=10, c=3):
    return rng.uniform(size=(n, h, w, c)).astype(np.float32)


def _blur_np(u, h):
    """Per image and channel: scipy's same-size convolution with symmetric boundary."""
    out = np.empty_like(u)
    for i in range(u.shape[0]):
        for c in range(u.shape[-1]):
            out[i, :, :, c] = convolve2d(u[i, :, :, c], h[i], mode="same", boundary="symm")
    return out


def test_charbonnier_is_the_per_pixel_mean():
    rng = np.random.default_rng(0)
    x, y = _images(rng), _images(rng)
    expected = np.mean(np.sqrt((x.astype(np.float64) - y) ** 2 + EPS ** 2), axis=(1, 2, 3))
    np.testing.assert_allclose(losses.charbonnier(x, y), expected, rtol=1e-5)
    # Identical images cost eps (not 0, not eps / sqrt(pixels)); the gradient there is finite (0).
    np.testing.assert_allclose(losses.charbonnier(x, x), EPS, rtol=1e-5)
    grad = jax.grad(lambda a: jnp.sum(losses.charbonnier(a, x)))(jnp.asarray(x))
    assert np.all(np.isfinite(grad)) and np.all(grad == 0)
    # Far from eps it is the mean absolute error (an L1 loss), independent of the image size.
    big = np.full((1, 5, 7, 1), 0.5, np.float32)
    np.testing.assert_allclose(losses.charbonnier(big, 0 * big), np.sqrt(0.25 + EPS ** 2), rtol=1e-6)


@pytest.mark.parametrize("channels", [3, 1])
def test_kernel_loss_matches_scipy(channels):
    rng = np.random.default_rng(1)
    sharp = _images(rng, c=channels)
    h_true = np.stack([kernels.gaussian(5, 1.0), kernels.gaussian(5, 2.0)])
    blurred = _blur_np(sharp, h_true)
    h_est = rng.uniform(size=(2, 5, 5)).astype(np.float32)
    h_est /= h_est.sum(axis=(1, 2), keepdims=True)
    expected = np.mean(np.abs(_blur_np(sharp, h_est) - blurred), axis=(1, 2, 3))
    np.testing.assert_allclose(losses.kernel_loss(h_est, sharp, blurred), expected, rtol=1e-4)
    # The true kernel explains the noise-free observation.
    np.testing.assert_allclose(losses.kernel_loss(h_true, sharp, blurred), 0, atol=1e-6)


def test_mgstnet_loss_sums_stages_and_weights_the_kernel_term():
    rng = np.random.default_rng(2)
    stages = 3
    sharp = _images(rng)
    h_true = np.stack([kernels.gaussian(5, 1.5)] * 2)
    blurred = _blur_np(sharp, h_true)
    images = tuple(_images(rng) for _ in range(stages))
    kerns = tuple(rng.uniform(size=(2, 5, 5)).astype(np.float32) for _ in range(stages))
    kerns = tuple(k / k.sum(axis=(1, 2), keepdims=True) for k in kerns)
    output = MGSTNetOutput(images=images, kernels=kerns, kgdm_kernels=kerns, igdm_images=images)

    char = sum(np.mean(np.sqrt((u.astype(np.float64) - sharp) ** 2 + EPS ** 2)) for u in images)
    kern = sum(np.mean(np.abs(_blur_np(sharp, k) - blurred)) for k in kerns)
    for alpha in (0.05, 0.0, 1.0):
        loss = losses.mgstnet_loss(output, sharp, blurred, alpha=alpha)
        assert loss.shape == ()
        np.testing.assert_allclose(loss, char + alpha * kern, rtol=1e-5)
    terms = losses.mgstnet_loss_terms(output, sharp, blurred)
    assert terms["charbonnier"].shape == terms["kernel"].shape == (stages,)
    # The default weight is the paper's alpha = 0.05.
    np.testing.assert_allclose(losses.mgstnet_loss(output, sharp, blurred), char + 0.05 * kern,
                               rtol=1e-5)


def test_mgstnet_loss_is_a_batch_mean():
    rng = np.random.default_rng(3)
    sharp = _images(rng, n=4)
    blurred = _blur_np(sharp, np.stack([kernels.gaussian(5, 1.0)] * 4))
    u = _images(rng, n=4)
    k = np.stack([kernels.uniform(5)] * 4)
    output = MGSTNetOutput(images=(u,), kernels=(k,), kgdm_kernels=(k,), igdm_images=(u,))
    whole = losses.mgstnet_loss(output, sharp, blurred)
    halves = [losses.mgstnet_loss(
        MGSTNetOutput(images=(u[s],), kernels=(k[s],), kgdm_kernels=(k[s],), igdm_images=(u[s],)),
        sharp[s], blurred[s]) for s in (slice(0, 2), slice(2, 4))]
    np.testing.assert_allclose(whole, np.mean(halves), rtol=1e-5)


def test_baseline_losses_resize_targets_like_their_models():
    """The losses resize the sharp image like each model resizes its pyramid; losses do not import
    the models, so the constants are checked here."""
    from unroll.models import idc, madn, mtwdn

    assert losses.MADN_RESIZE_METHOD == madn.RESIZE_METHOD
    assert losses.IDC_RESIZE_METHOD == idc.RESIZE_METHOD
    assert losses.MTWDN_RESIZE_METHOD == mtwdn.RESIZE_METHOD


def test_losses_import_no_model():
    import subprocess
    import sys

    code = ("import sys, unroll.losses; "
            "print(sorted(m for m in sys.modules if m.startswith('unroll.models')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
