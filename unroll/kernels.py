"""Point-spread functions: Gaussian (isotropic, anisotropic), random camera shake, defocus disk.

All generators return float32 numpy arrays `[size, size]` (odd size), nonnegative, summing to 1 and
centred: their centre of mass is the centre element `(size // 2, size // 2)` (exactly for the symmetric
ones, up to rounding for motion kernels). They run on the host, in the data pipeline.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.signal import convolve2d, lfilter


def _check_size(size: int):
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd integer, got {size}")


def _grid(size: int):
    r = np.arange(size, dtype=np.float64) - size // 2
    return np.meshgrid(r, r, indexing="ij")  # (y, x)


def _normalise(k):
    k = np.maximum(k, 0)
    return (k / k.sum()).astype(np.float32)


def gaussian(size: int = 15, sigma: float = 1.6):
    """Isotropic Gaussian exp(-(x^2 + y^2) / (2 sigma^2)) sampled on the grid, normalised.

    >>> h = gaussian(5, 1.0)
    >>> h.shape, h.dtype, round(float(h.sum()), 6), round(float(h[2, 2]), 4)
    ((5, 5), dtype('float32'), 1.0, 0.1621)
    >>> bool((h == h.T).all() and (h == h[::-1]).all())  # symmetric about the centre
    True
    """
    return anisotropic_gaussian(size, sigma, sigma, 0.0)


def anisotropic_gaussian(size: int, sigma_x: float, sigma_y: float, angle: float = 0.0):
    """Gaussian with standard deviations `sigma_x`, `sigma_y` along axes rotated by `angle` (radians).

    >>> import numpy as np
    >>> h = anisotropic_gaussian(7, 2.0, 0.5)  # elongated along x (the columns)
    >>> bool(h[3].sum() > h[:, 3].sum()), round(float(h.sum()), 6)
    (True, 1.0)
    >>> bool(np.allclose(anisotropic_gaussian(7, 2.0, 0.5, np.pi / 2), h.T, atol=1e-7))
    True
    """
    _check_size(size)
    if sigma_x <= 0 or sigma_y <= 0:
        raise ValueError(f"Gaussian sigmas must be positive, got {sigma_x}, {sigma_y}")
    y, x = _grid(size)
    c, s = np.cos(angle), np.sin(angle)
    xr, yr = c * x + s * y, -s * x + c * y
    return _normalise(np.exp(-0.5 * ((xr / sigma_x) ** 2 + (yr / sigma_y) ** 2)))


def disk(size: int, radius: float, supersample: int = 8):
    """Uniform disk (defocus) of `radius` pixels, anti-aliased by supersampling each pixel.

    >>> h = disk(7, 2.0)
    >>> round(float(h.sum()), 6), float(h[0, 0]), bool(h[3, 3] == h.max())
    (1.0, 0.0, True)
    """
    _check_size(size)
    if radius <= 0:
        raise ValueError(f"disk radius must be positive, got {radius}")
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    y, x = _grid(size)
    cover = np.zeros((size, size))
    for dy in offsets:
        for dx in offsets:
            cover += (y + dy) ** 2 + (x + dx) ** 2 <= radius ** 2
    if cover.sum() == 0:  # radius below the sampling resolution: a delta
        cover[size // 2, size // 2] = 1
    return _normalise(cover)


def motion(size: int, rng: np.random.Generator, length: float | None = None, steps: int = 2000,
           inertia: float = 0.7, jitter: float = 0.3):
    """Random camera-shake kernel: a random trajectory splatted bilinearly onto the grid.

    The trajectory is a random walk in the plane with momentum (`inertia`, the camera's smooth
    motion) and random turns (`jitter`, shake), scaled to a random extent of at most `size - 1`
    pixels and recentred so that its mean, which bilinear splatting preserves, is the kernel centre.

    >>> import numpy as np
    >>> h = motion(15, np.random.default_rng(0))
    >>> h.shape, round(float(h.sum()), 5), bool((h >= 0).all())
    ((15, 15), 1.0, True)
    >>> rows, cols = np.mgrid[:15, :15]
    >>> round(float((h * rows).sum()), 2), round(float((h * cols).sum()), 2)  # centre of mass
    (7.0, 7.0)
    """
    _check_size(size)
    # direction_i = inertia * direction_{i-1} + jitter * noise_i, as a first-order recursive filter.
    noise = rng.normal(size=(steps, 2))
    noise[0] /= max(jitter, 1e-12)
    direction = lfilter([jitter], [1.0, -inertia], noise, axis=0)
    velocity = direction / np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-12)
    points = np.cumsum(velocity, axis=0)
    points -= points.mean(axis=0)
    extent = np.abs(points).max() * 2
    if length is None:
        length = rng.uniform(0.3, 1.0) * (size - 1)
    points *= min(length, size - 1) / max(extent, 1e-12)
    # The mean stays 0 under scaling; shift to the centre and splat with bilinear weights.
    return _normalise(_splat(points + size // 2, size))


def shake(size: int, rng: np.random.Generator, extent: float | None = None, samples: int = 2048,
          jerks: float = 2.0, optical_blur: float = 0.5):
    """Camera-shake kernel from a random-acceleration trajectory, in the manner of Boracchi and Foi
    (2012): the time the camera spends at each point of its path during a random exposure.

    The camera's position x(t) (2-D, time in units of the trajectory's duration) is a damped spring
    driven by forces: x'' = -w^2 x - 2 z w x' + a(t), where a(t) is Gaussian white noise (the hand's
    tremor) plus impulsive jerks (a Poisson number, `jerks` on average, each a sudden change of
    velocity) and a kick at t = 0 (the initial velocity); a steady drift (constant velocity) is
    added to x. The frequency w (0.5 to 3 swings per duration), damping z and the share of each
    force are random. The exposure is a random window of 30 to 100 % of the duration. Time is
    sampled uniformly, so the kernel is bright where the camera slows (turning points, hesitations)
    and faint where it moves fast, and its path is smooth (the acceleration, not the direction, is
    random). `motion`'s constant-speed persistent random walk differs in kind: even mass along a
    path that jitters at every step.

    The path is scaled so that the longer side of its bounding box is `extent` pixels (at most
    size - 1; drawn from U[0.2, 1] (size - 1) when None), sampled finely enough that no step exceeds
    1/4 pixel, and shifted so its mean, which bilinear splatting keeps as the centre of mass, is the
    kernel centre; where the path centred so would leave the support it is shrunk to fit. With
    probability `optical_blur` the splat gets a slight optical blur (separable [c, 1 - 2c, c],
    c ~ U[0.03, 0.2], which keeps the centre of mass; the path then keeps a 1-pixel margin).

    >>> import numpy as np
    >>> h = shake(31, np.random.default_rng(0), extent=24)
    >>> h.shape, h.dtype, round(float(h.sum()), 5), bool((h >= 0).all())
    ((31, 31), dtype('float32'), 1.0, True)
    >>> rows, cols = np.mgrid[:31, :31]
    >>> round(float((h * rows).sum()), 2), round(float((h * cols).sum()), 2)  # centre of mass
    (15.0, 15.0)
    """
    _check_size(size)
    if extent is not None and extent < 0:
        raise ValueError(f"shake extent must be >= 0, got {extent}")
    if samples < 2:
        raise ValueError(f"shake needs at least 2 samples, got {samples}")
    exposure = rng.uniform(0.3, 1.0)
    n = int(np.ceil(samples / exposure))
    dt = 1.0 / n
    w = 2 * np.pi * rng.uniform(0.5, 3.0)
    z = rng.uniform(0.1, 0.7)
    # Forces as velocity changes per step, each in units that give a swing of about 1.
    force = rng.uniform(0.2, 1.5) * np.sqrt(4 * z * w ** 3 * dt) * rng.normal(size=(n, 2))
    force[0] += rng.uniform(0.0, 1.0) * w * _direction(rng)
    for t in rng.integers(0, n, size=rng.poisson(jerks)):
        force[t] += rng.uniform(0.5, 2.0) * w * _direction(rng)
    # Semi-implicit Euler, v += dt (f - w^2 x - 2 z w v), x += dt v, as one linear recursion in x.
    a = 1 - 2 * z * w * dt
    x = lfilter([0.0, dt], [1.0, (w * dt) ** 2 - 1 - a, a], force, axis=0)
    x += rng.uniform(0.0, 1.5) * np.linspace(0, 1, n)[:, None] * _direction(rng)
    start = int(rng.integers(0, n - samples + 1))
    points = x[start:start + samples]

    if extent is None:
        extent = rng.uniform(0.2, 1.0) * (size - 1)
    blur = optical_blur > 0 and rng.random() < optical_blur
    span = np.ptp(points, axis=0).max()
    points = points * (min(extent, size - 1) / span if span > 1e-12 else 0.0)
    steps = np.linalg.norm(np.diff(points, axis=0), axis=1).max()
    if steps > 0.25:  # resample the path linearly so that the splat has no gaps
        t = np.linspace(0, len(points) - 1, int(np.ceil(steps / 0.25)) * (len(points) - 1) + 1)
        points = np.stack([np.interp(t, np.arange(len(points)), p) for p in points.T], axis=1)
    points -= points.mean(axis=0)
    room = (size - 1) / 2 - blur
    reach = np.abs(points).max()
    if reach > room:
        points *= max(room, 0.0) / reach
    kernel = _splat(points + size // 2, size)
    if blur:
        c = rng.uniform(0.03, 0.2)
        taps = np.array([c, 1 - 2 * c, c])
        kernel = convolve2d(kernel, np.outer(taps, taps), mode="same")
    return _normalise(kernel)


def _direction(rng: np.random.Generator):
    angle = rng.uniform(0, 2 * np.pi)
    return np.array([np.sin(angle), np.cos(angle)])


def _splat(points, size: int):
    """Bilinear splat of `[n, 2]` (row, column) points, each of mass 1, onto a `size`^2 grid: it
    keeps the points' mean as the centre of mass (points inside the grid)."""
    kernel = np.zeros((size, size))
    lo = np.floor(points).astype(int)
    frac = points - lo
    for oy in (0, 1):
        for ox in (0, 1):
            w = (frac[:, 0] if oy else 1 - frac[:, 0]) * (frac[:, 1] if ox else 1 - frac[:, 1])
            yy, xx = np.clip(lo[:, 0] + oy, 0, size - 1), np.clip(lo[:, 1] + ox, 0, size - 1)
            np.add.at(kernel, (yy, xx), w)
    return kernel


def perturb(h: np.ndarray, rng: np.random.Generator, failure: float = 0.15) -> np.ndarray:
    """An initial kernel h_0 that errs as a classical blind estimator's does, made from the true
    kernel `h` `[kh, kw]`: for training a warm-started network without running the estimator per crop.

    Error model (each part drawn independently; at least one always applies), in this order:
      * scale (p = 0.5): the path dilated or eroded about the centre by a factor in [0.7, 1.3]
        (the estimator's kernel a little too large or small); or, p = 0.1 instead, a wrong size:
        a factor in [0.4, 0.7] or [1.3, 1.8], the estimate of a run at the wrong kernel size;
      * shift (p = 0.7): a subpixel translation of 0 to 3 pixels (blind estimation recovers the
        kernel up to a translation); mass pushed off the support is lost;
      * spurious blobs (p = 0.4): 1 to 3 small Gaussian blobs (sigma 0.5 to 1.2), each with 2 to
        15 % of the mass, near the kernel's support (structure of the image leaking into h);
      * blur (p = 0.4): a Gaussian of sigma 0.3 to 1 (the coarse scales' smoothing left over);
      * failure (p = `failure`): 50 to 90 % of the mass replaced by speckle, sparse positive noise
        over the whole support, which is how `unroll.classical.estimate_kernel` fails on weakly
        textured scenes (on 24 crops of 256 px from RSSCN7's test split blurred by 31-px `shake`
        or `motion` kernels, noise 0.005, 8 bits, its MNC to the truth was 0.60 to 0.97 on 11 and
        0.27 to 0.46, such speckle, on 13; mean 0.56; perturb's mean is about 0.73 at 31 px);
      * noise and threshold (p = 0.5): positive (exponential) noise of mean 1 to 8 % of the peak
        everywhere, then every value below a threshold of up to 10 % of the peak set to 0 (as the
        estimators' final pruning, which also cuts faint parts of the true path).
    The result is nonnegative, finite, sums to 1 and has the shape of `h`.

    >>> import numpy as np
    >>> h = gaussian(15, 2.0)
    >>> h0 = perturb(h, np.random.default_rng(0))
    >>> h0.shape, h0.dtype, round(float(h0.sum()), 5), bool((h0 >= 0).all()), bool((h0 != h).any())
    ((15, 15), dtype('float32'), 1.0, True, True)
    """
    h = np.asarray(h, np.float64)
    if h.ndim != 2:
        raise ValueError(f"perturb needs one [kh, kw] kernel, got shape {h.shape}")
    if not np.isfinite(h).all() or (h < 0).any() or h.sum() <= 0:
        raise ValueError("perturb needs a finite nonnegative kernel with positive mass")
    if not 0 <= failure <= 1:
        raise ValueError(f"perturb's failure probability must be in [0, 1], got {failure}")
    parts = rng.random(7) < (0.5, 0.1, 0.7, 0.4, 0.4, failure, 0.5)
    if not parts.any():
        parts[rng.integers(7)] = True
    scale, wrong_size, shift, blobs, blur, failed, noise = parts
    h = h / h.sum()
    if wrong_size:
        h = _rescale(h, rng.choice([rng.uniform(0.4, 0.7), rng.uniform(1.3, 1.8)]))
    elif scale:
        h = _rescale(h, rng.uniform(0.7, 1.3))
    if shift:
        angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(0, 3)
        h = ndimage.shift(h, distance * np.array([np.sin(angle), np.cos(angle)]), order=1)
    h = h / max(h.sum(), 1e-12)
    if blobs:
        near = np.argwhere(ndimage.binary_dilation(h > 0.1 * h.max(), iterations=3))
        rows, cols = np.indices(h.shape)
        for _ in range(rng.integers(1, 4)):
            y, x = near[rng.integers(len(near))] + rng.uniform(-0.5, 0.5, 2)
            sigma = rng.uniform(0.5, 1.2)
            blob = np.exp(-((rows - y) ** 2 + (cols - x) ** 2) / (2 * sigma ** 2))
            h = h + rng.uniform(0.02, 0.15) * blob / blob.sum()
    if blur:
        h = ndimage.gaussian_filter(h, rng.uniform(0.3, 1.0), mode="constant")
    if failed:
        speckle = rng.exponential(1.0, h.shape) * (rng.random(h.shape) < rng.uniform(0.2, 0.6))
        if speckle.sum() > 0:
            share = rng.uniform(0.5, 0.9)
            h = (1 - share) * h / h.sum() + share * speckle / speckle.sum()
    if noise:
        peak = h.max()
        h = h + rng.exponential(rng.uniform(0.01, 0.08) * peak, h.shape)
        h = np.where(h < rng.uniform(0, 0.1) * h.max(), 0.0, h)
    if not np.isfinite(h).all() or h.sum() <= 0:  # cannot happen for a valid h; never give NaN
        return np.full(h.shape, 1.0 / h.size, np.float32)
    return _normalise(h)


def _rescale(h: np.ndarray, factor: float) -> np.ndarray:
    """`h` magnified by `factor` about its centre element (bilinear), same shape, mass kept."""
    c = np.array(h.shape) // 2
    out = ndimage.affine_transform(h, np.eye(2) / factor, offset=c - c / factor, order=1)
    return out / out.sum() if out.sum() > 0 else h


def delta(size: int, shift=(0, 0)):
    """A unit impulse at the centre plus `shift` (rows, columns): blurring with it shifts by `shift`.

    >>> delta(3, shift=(0, 1)).tolist()
    [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    """
    _check_size(size)
    k = np.zeros((size, size), np.float32)
    k[size // 2 + shift[0], size // 2 + shift[1]] = 1
    return k


def uniform(size: int):
    """Flat kernel, the initial estimate h_0 of MGSTNet.

    >>> h = uniform(15)
    >>> h.shape, round(float(h.sum()), 5), bool((h == h[0, 0]).all())
    ((15, 15), 1.0, True)
    """
    _check_size(size)
    return np.full((size, size), 1.0 / size ** 2, np.float32)
