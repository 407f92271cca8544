"""Point-spread functions: Gaussian (isotropic, anisotropic), random camera shake, defocus disk.

All generators return float32 numpy arrays `[size, size]` (odd size), nonnegative, summing to 1 and
centred: their centre of mass is the centre element `(size // 2, size // 2)` (exactly for the symmetric
ones, up to rounding for motion kernels). They run on the host, in the data pipeline.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter


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
    points += size // 2
    kernel = np.zeros((size, size))
    lo = np.floor(points).astype(int)
    frac = points - lo
    for oy in (0, 1):
        for ox in (0, 1):
            w = (frac[:, 0] if oy else 1 - frac[:, 0]) * (frac[:, 1] if ox else 1 - frac[:, 1])
            yy, xx = np.clip(lo[:, 0] + oy, 0, size - 1), np.clip(lo[:, 1] + ox, 0, size - 1)
            np.add.at(kernel, (yy, xx), w)
    return _normalise(kernel)


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
