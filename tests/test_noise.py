"""unroll.noise against known synthetic noise: smooth images, blurred and sharp textures, the
shape and dtype conventions, jit, and the tail criterion against a plain-Python loop of Chen et al.'s."""

import statistics

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from skimage import data

from unroll import noise

STDS = (0.002, 0.005, 0.01, 0.02, 0.05)
SIZE = 256


def _texture(seed, beta):
    """A random-phase texture with a 1/f^beta amplitude spectrum (beta 1: natural-looking, 0: white),
    mean 0.5, std 0.2."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(SIZE)
    radius = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    radius[0, 0] = 1.0
    field = np.real(np.fft.ifft2(radius ** -beta * np.exp(2j * np.pi * rng.random((SIZE, SIZE)))))
    return (0.5 + 0.2 * (field - field.mean()) / field.std()).astype(np.float32)


def _smooth(name):
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    if name == "ramp":
        return (0.2 + 0.6 * x).astype(np.float32)
    return (0.5 + 0.3 * np.sin(2 * np.pi * x) * np.cos(3 * np.pi * y)).astype(np.float32)


def _textured(name):
    if name == "checkerboard":
        y, x = np.mgrid[0:SIZE, 0:SIZE] // 8
        return (0.2 + 0.6 * ((x + y) % 2)).astype(np.float32)
    if name in ("natural", "white"):
        return _texture(1 if name == "natural" else 2, 1.0 if name == "natural" else 0.0)
    photo = getattr(data, name)()  # scikit-image's sample photographs (shipped with it)
    return (photo[:SIZE, :SIZE] / 255).astype(np.float32)


def _noisy_stack(image, seed):
    """`[len(STDS), H, W, C]`: the image with white Gaussian noise of each std of STDS."""
    image = image if image.ndim == 3 else image[:, :, None]
    draws = np.random.default_rng(seed).standard_normal((len(STDS), *image.shape)).astype(np.float32)
    return image[None] + np.asarray(STDS, np.float32)[:, None, None, None] * draws


def _relative_errors(images, seed):
    return np.abs(np.asarray(noise.estimate_batch(_noisy_stack(images, seed))) / np.asarray(STDS) - 1)


@pytest.mark.parametrize("name", ["ramp", "waves"])
def test_smooth_images_give_the_true_std(name):
    # 62500 patches: the tail mean's sampling error is a fraction of a per cent.
    errors = _relative_errors(_smooth(name), seed=0)
    assert errors.max() < 0.03, dict(zip(STDS, errors))


@pytest.mark.parametrize("name", ["natural", "white", "checkerboard", "camera", "astronaut", "grass"])
@pytest.mark.parametrize("blur", [1.0, 4.0])  # the ends of the training range
def test_blurred_textures_give_the_true_std(name, blur):
    """Blur (Gaussian sigma 1 to 4, as the training data's) empties most of patch space of signal: the
    issue asks within 25 % at stds 0.005-0.02; with 62500 patches it is within 10 % at all of STDS."""
    image = _textured(name)
    blurred = ndimage.gaussian_filter(image, (blur, blur) + (0,) * (image.ndim - 2))
    errors = _relative_errors(blurred, seed=1)
    assert errors.max() < 0.10, dict(zip(STDS, errors))


def _patch_variance_bound(image):
    """The largest value the estimator can give on a gray image with stride 1: every tail mean of
    the 48 eigenvalues is at most their mean, trace / 48, and the trace is at most the mean over
    patches of the squared distance of a patch to its own mean."""
    patches = np.lib.stride_tricks.sliding_window_view(image.astype(np.float64), (7, 7)).reshape(-1, 49)
    return np.sqrt(((patches - patches.mean(axis=1, keepdims=True)) ** 2).sum(axis=1).mean() / 48)


@pytest.mark.parametrize("name", ["natural", "white", "checkerboard", "camera", "brick", "grass"])
def test_sharp_textures_read_high_but_within_the_bounds(name):
    """On sharp texture the signal fills the tail too, so the estimate is high (the std is then an
    upper limit, not a measurement). Bounds: from below, noise of std sigma adds sigma^2 to every
    eigenvalue, less the sample covariance's spread (Marchenko-Pastur: a factor 1 - sqrt(48 / m) on
    the std for m patches); from above, the patch-variance bound."""
    noisy = _noisy_stack(_textured(name), seed=2)
    got = np.asarray(noise.estimate_batch(noisy))
    patches = (SIZE - 6) ** 2
    assert np.isfinite(got).all()
    assert (got >= np.asarray(STDS) * (1 - np.sqrt(48 / patches))).all(), dict(zip(STDS, got))
    upper = [_patch_variance_bound(image[:, :, 0]) for image in noisy]
    assert (got <= np.asarray(upper) * (1 + 1e-4)).all(), (got, upper)
    assert noise.estimate(_textured(name)) > 0  # the noise-free texture reads as some noise


def test_gray_single_band_and_batch_of_one_agree():
    image = _textured("camera") + 0.01 * np.random.default_rng(3).standard_normal((SIZE, SIZE)).astype(np.float32)
    gray = noise.estimate(image)
    assert noise.estimate(image[:, :, None]) == gray
    assert float(noise.estimate_batch(image[None, :, :, None])[0]) == gray
    assert isinstance(gray, float)


def test_rgb_is_the_mean_of_its_bands_and_a_batch_its_images():
    rng = np.random.default_rng(4)
    rgb = ndimage.gaussian_filter(_textured("astronaut"), (2, 2, 0))
    rgb = rgb + np.array([0.005, 0.01, 0.03], np.float32) * rng.standard_normal(rgb.shape).astype(np.float32)
    bands = [noise.estimate(rgb[:, :, c]) for c in range(3)]
    np.testing.assert_allclose(bands, [0.005, 0.01, 0.03], rtol=0.1)
    np.testing.assert_allclose(noise.estimate(rgb), np.mean(bands), rtol=1e-5)
    batch = np.stack([rgb, rgb[::-1], 0.5 * rgb])
    np.testing.assert_allclose(np.asarray(noise.estimate_batch(batch)),
                               [noise.estimate(image) for image in batch], rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_unsigned_integers_are_scaled_by_their_largest_value(dtype):
    top = np.iinfo(dtype).max
    rng = np.random.default_rng(5)
    image = np.clip(np.round((_smooth("waves") + 0.02 * rng.standard_normal((SIZE, SIZE))) * top), 0, top)
    got = noise.estimate(image.astype(dtype))
    assert got == pytest.approx(noise.estimate((image / top).astype(np.float32)), rel=1e-4)
    assert got == pytest.approx(0.02, rel=0.05)


def test_jit_gives_the_eager_values_and_no_gradient():
    noisy = _noisy_stack(ndimage.gaussian_filter(_textured("natural"), 2.0), seed=6)
    eager = np.asarray(noise.estimate_batch(noisy))
    np.testing.assert_array_equal(np.asarray(jax.jit(noise.estimate_batch)(noisy)), eager)
    gradient = jax.grad(lambda x: noise.estimate_batch(x).sum())(jnp.asarray(noisy))
    assert not np.asarray(gradient).any()


@pytest.mark.parametrize("shape", [(7, 7), (7, 9, 3), (SIZE, SIZE)])
def test_constant_and_tiny_images_give_finite_values(shape):
    assert noise.estimate(np.full(shape, 0.3, np.float32)) == 0.0
    tiny = np.random.default_rng(7).random(shape).astype(np.float32)
    assert np.isfinite(noise.estimate(tiny)) and noise.estimate(tiny) >= 0


@pytest.mark.parametrize("shape", [(10,), (6, 20), (20, 6, 3), (1, 20, 20, 1), (20, 20, 3, 1)])
def test_estimate_rejects_wrong_shapes_in_one_line(shape):
    with pytest.raises(ValueError, match=r"\[H, W\] or \[H, W, C\] of at least 7x7") as caught:
        noise.estimate(np.zeros(shape, np.float32))
    assert str(shape) in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("shape", [(20, 20, 3), (1, 6, 20, 1), (1, 20, 20)])
def test_estimate_batch_rejects_wrong_shapes_in_one_line(shape):
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]") as caught:
        noise.estimate_batch(np.zeros(shape, np.float32))
    assert "\n" not in str(caught.value)


def _chen_loop(eigenvalues):
    """Chen et al.'s criterion as written: from the largest eigenvalue down, the first tail whose
    mean is at most its median gives sigma^2 as that mean."""
    for i in range(len(eigenvalues)):
        tail = [float(v) for v in eigenvalues[i:]]
        if statistics.fmean(tail) <= statistics.median(tail):
            return statistics.fmean(tail)
    raise AssertionError("the last tail always qualifies")


@pytest.mark.parametrize("kind", ["uniform", "signal_plus_noise", "ties"])
def test_tail_variance_matches_a_plain_loop(kind):
    rng = np.random.default_rng({"uniform": 8, "signal_plus_noise": 9, "ties": 10}[kind])
    if kind == "uniform":
        values = rng.random((20, 48))
    elif kind == "signal_plus_noise":  # a decaying signal spectrum over a flat noise floor with spread
        values = 1e-4 * (1 + 0.1 * rng.standard_normal((20, 48))) + rng.random((20, 1)) * np.exp(
            -np.arange(48) / rng.uniform(1, 6, (20, 1)))
    else:
        values = rng.integers(0, 4, (20, 48)).astype(float)
    values = -np.sort(-values.astype(np.float32), axis=-1)
    got = np.asarray(noise._tail_noise_variance(jnp.asarray(values)))
    np.testing.assert_allclose(got, [_chen_loop(v) for v in values], rtol=1e-5)


def test_tail_variance_of_a_flat_tail_is_its_value():
    values = jnp.array([9.0, 4.0, 2.0, 0.5, 0.5, 0.5, 0.5])
    assert float(noise._tail_noise_variance(values)) == 0.5
    assert float(noise._tail_noise_variance(jnp.array([3.0]))) == 3.0


def test_large_images_sample_a_strided_grid_and_stay_accurate():
    side = 1500
    y, x = np.mgrid[0:side, 0:side] / side
    clean = (0.5 + 0.3 * np.sin(2 * np.pi * x) * np.cos(3 * np.pi * y)).astype(np.float32)
    noisy = clean + 0.01 * np.random.default_rng(11).standard_normal(clean.shape).astype(np.float32)
    assert noise.estimate(noisy) == pytest.approx(0.01, rel=0.03)
    # The patch grid the estimator builds holds at most MAX_PATCHES positions (bounded memory), yet
    # more than a quarter of them (the stride is no coarser than it must be).
    jaxpr = jax.make_jaxpr(noise.estimate_batch)(jax.ShapeDtypeStruct((1, side, side, 1), jnp.float32))
    grids = [eqn.outvars[0].aval.shape for eqn in jaxpr.jaxpr.eqns if eqn.primitive.name == "conv_general_dilated"]
    assert len(grids) == 1
    positions = grids[0][1] * grids[0][2]
    assert noise.MAX_PATCHES / 4 < positions <= noise.MAX_PATCHES, grids
