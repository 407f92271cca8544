"""PSF generators: nonnegative, normalised, centred, with the requested spread."""

import numpy as np
import pytest

from unroll import kernels


def _centroid(k):
    y, x = np.indices(k.shape)
    return (k * y).sum(), (k * x).sum()


def _check_psf(k, size, centre_tol=1e-4):
    assert k.shape == (size, size) and k.dtype == np.float32
    assert np.all(k >= 0)
    np.testing.assert_allclose(k.sum(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(_centroid(k), (size // 2, size // 2), atol=centre_tol)


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5])
def test_gaussian(sigma):
    k = kernels.gaussian(15, sigma)
    _check_psf(k, 15)
    y, x = np.indices(k.shape) - 7
    # Point-sampled, like MATLAB's fspecial: ratios to the centre are exactly the Gaussian's.
    np.testing.assert_allclose(k / k[7, 7], np.exp(-(x ** 2 + y ** 2) / (2 * sigma ** 2)), rtol=1e-5, atol=1e-30)
    if sigma >= 1:  # the discrete second moment approaches sigma^2 once the Gaussian spans pixels
        assert abs(np.sqrt((k * x ** 2).sum()) - sigma) < 0.05 * sigma
    np.testing.assert_allclose(k, k.T, atol=1e-7)


def test_anisotropic_gaussian_orientation():
    k = kernels.anisotropic_gaussian(21, 4.0, 1.0, 0.0)
    _check_psf(k, 21)
    y, x = np.indices(k.shape) - 10
    assert (k * x ** 2).sum() > 10 * (k * y ** 2).sum()  # elongated along x (columns)
    k90 = kernels.anisotropic_gaussian(21, 4.0, 1.0, np.pi / 2)
    np.testing.assert_allclose(k90, k.T, atol=1e-6)


def test_disk():
    k = kernels.disk(15, 4.0)
    _check_psf(k, 15)
    assert k[7, 7] > 0 and k[7, 0] == 0 and k[7, 11] > 0


def test_motion_kernels_are_seeded_and_centred():
    a = kernels.motion(19, np.random.default_rng(5))
    b = kernels.motion(19, np.random.default_rng(5))
    c = kernels.motion(19, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    for k in (a, c):
        _check_psf(k, 19, centre_tol=1e-3)
        assert (k > 0).sum() > 19  # a path, not a point


def test_delta_and_uniform():
    _check_psf(kernels.delta(5), 5)
    _check_psf(kernels.uniform(7), 7)
    assert kernels.delta(5, (1, -2))[3, 0] == 1


def test_even_size_is_rejected():
    with pytest.raises(ValueError, match="odd"):
        kernels.gaussian(14, 1.0)
