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


# --------------------------------------------------------------------------------------------------
# kernels.shake: random-acceleration camera shake.


def _support_extent(k):
    rows, cols = np.nonzero(k)
    return max(np.ptp(rows), np.ptp(cols))


@pytest.mark.parametrize("size", [15, 31, 41])
def test_shake_kernels_are_centred_psfs_over_the_whole_extent_range(size):
    extents = []
    for seed in range(40):
        k = kernels.shake(size, np.random.default_rng(seed))
        _check_psf(k, size, centre_tol=1e-3)
        assert np.isfinite(k).all() and (k > 0).sum() > 3  # a path, not a point
        extents.append(_support_extent(k))
    # Drawn up to size - 1: small and large ones, the largest filling the support.
    assert min(extents) < 0.5 * (size - 1) and max(extents) >= size - 2


@pytest.mark.parametrize("size", [15, 31])
def test_shake_is_seeded_and_keeps_all_its_mass_inside_the_support(size):
    a = kernels.shake(size, np.random.default_rng(3), extent=(size - 3) / 2)
    np.testing.assert_array_equal(a, kernels.shake(size, np.random.default_rng(3), extent=(size - 3) / 2))
    assert not np.allclose(a, kernels.shake(size, np.random.default_rng(4), extent=(size - 3) / 2))
    for seed in range(10):
        # Same trajectory on a larger canvas: had the splat been clipped at the border, the centre
        # of the large kernel would differ from the small one.
        small = kernels.shake(size, np.random.default_rng(seed), extent=(size - 3) / 2)
        large = kernels.shake(size + 20, np.random.default_rng(seed), extent=(size - 3) / 2)
        np.testing.assert_allclose(large[10:-10, 10:-10], small, atol=1e-6)
        assert large.sum() - large[10:-10, 10:-10].sum() < 1e-6


def test_shake_extent_is_the_path_bounding_box():
    for seed in range(10):
        for extent in (4.0, 12.0, 24.0):
            k = kernels.shake(41, np.random.default_rng(seed), extent=extent)
            # The path spans `extent` px; the bilinear splat and the optical blur add up to 3.
            assert extent <= _support_extent(k) <= extent + 3
        full = kernels.shake(15, np.random.default_rng(seed), extent=100.0)  # capped at the support
        _check_psf(full, 15, centre_tol=1e-3)
    with pytest.raises(ValueError, match="extent"):
        kernels.shake(15, np.random.default_rng(0), extent=-1.0)


def _coherence(k):
    """Mass-weighted coherence of the structure tensor: near 1 along thin smooth curves, lower in
    clouds of crossing paths."""
    from scipy import ndimage

    gy, gx = np.gradient(k.astype(np.float64))
    jxx, jyy, jxy = (ndimage.gaussian_filter(a, 1.0) for a in (gx * gx, gy * gy, gx * gy))
    trace = jxx + jyy
    spread = np.sqrt((jxx - jyy) ** 2 + 4 * jxy ** 2)
    return float((np.where(trace > 0, spread / np.maximum(trace, 1e-30), 0) * k).sum())


def _interior_fraction(k):
    """Share of the kernel's support (above 5 % of the peak) whose whole 3x3 neighbourhood is
    support too: 0 for a thin curve, large for a 2-D cloud."""
    from scipy import ndimage

    support = k > 0.05 * k.max()
    return ndimage.binary_erosion(support, np.ones((3, 3))).sum() / support.sum()


def test_shake_differs_in_kind_from_motion():
    # motion is a constant-speed walk that turns at every step (a cloud of crossings); shake is a
    # smooth, accelerated path (thin curves with bright turning points). Measured over 60 seeds at
    # 41 px: coherence medians ~0.42 against ~0.57, interior shares ~0.24 against ~0.11.
    seeds = range(60)
    motion = [kernels.motion(41, np.random.default_rng(s)) for s in seeds]
    shake = [kernels.shake(41, np.random.default_rng(s)) for s in seeds]
    assert np.median([_coherence(k) for k in shake]) > np.median([_coherence(k) for k in motion]) + 0.08
    assert np.mean([_interior_fraction(k) for k in shake]) < 0.7 * np.mean([_interior_fraction(k) for k in motion])


# --------------------------------------------------------------------------------------------------
# kernels.perturb: initial kernels that err as a blind estimator does.


def _mnc(a, b):
    from unroll import metrics

    return float(metrics.mnc(a, b)[0])


@pytest.mark.parametrize("size", [15, 31, 41])
def test_perturb_keeps_a_psf_of_the_same_shape_and_differs_from_it(size):
    scores, moved = [], []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        h = (kernels.shake, kernels.motion)[seed % 2](size, rng)
        h0 = kernels.perturb(h, rng)
        assert h0.shape == h.shape and h0.dtype == np.float32 and np.isfinite(h0).all()
        assert (h0 >= 0).all()
        np.testing.assert_allclose(h0.sum(), 1.0, rtol=1e-5)
        assert not np.allclose(h0, h, atol=1e-4)
        scores.append(_mnc(h0, h))
        moved.append(np.hypot(*np.subtract(_centroid(h0), _centroid(h))))
    # Wrong, as an estimate is, but mostly still related to the truth; a few failed estimates.
    assert 0.5 < np.mean(scores) < 0.9 and max(scores) > 0.95
    assert 0 < np.mean(np.array(scores) < 0.5) < 0.4
    assert max(moved) > 1.0  # some are shifted


def test_perturb_failure_probability_sets_how_often_the_estimate_is_speckle():
    h = kernels.shake(31, np.random.default_rng(0), extent=20)
    never = [_mnc(kernels.perturb(h, np.random.default_rng(s), failure=0.0), h) for s in range(20)]
    always = [_mnc(kernels.perturb(h, np.random.default_rng(s), failure=1.0), h) for s in range(20)]
    assert min(never) > 0.45 and np.mean(never) > 0.75
    assert np.mean(always) < 0.6 and np.mean(always) < np.mean(never) - 0.2
    with pytest.raises(ValueError, match="failure"):
        kernels.perturb(h, np.random.default_rng(0), failure=1.5)


def test_perturb_is_seeded_takes_any_2d_kernel_and_refuses_bad_input():
    h = kernels.gaussian(15, 2.0)
    np.testing.assert_array_equal(kernels.perturb(h, np.random.default_rng(1)),
                                  kernels.perturb(h, np.random.default_rng(1)))
    assert not np.array_equal(kernels.perturb(h, np.random.default_rng(1)),
                              kernels.perturb(h, np.random.default_rng(2)))
    rect = kernels.perturb(3.0 * h[2:-2], np.random.default_rng(0))  # 11x15, unnormalised
    assert rect.shape == (11, 15) and abs(rect.sum() - 1) < 1e-5
    delta = kernels.perturb(kernels.delta(9), np.random.default_rng(0))
    assert np.isfinite(delta).all() and abs(delta.sum() - 1) < 1e-5
    for bad in (np.zeros((5, 5)), -h, np.full((5, 5), np.nan), np.ones((2, 5, 5))):
        with pytest.raises(ValueError, match="perturb"):
            kernels.perturb(bad, np.random.default_rng(0))
