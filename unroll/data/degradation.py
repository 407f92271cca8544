"""Degradation g = h * u + n (paper eq. 1), computed on the host in numpy.

`blur_host` is the same symmetric-boundary convolution as `unroll.ops.blur(..., "symmetric")`, so
grain workers never call JAX: `h` an isotropic Gaussian `kernel_size`^2 with sigma ~ U[sigma_range]
or, with probability `motion_prob`, a random camera-shake kernel; `n` white Gaussian noise of std
`noise`. The result is NOT clipped to [0, 1]: the model has no clipping, and keeping it makes
`blurred == ops.blur(sharp, kernel) + n` hold exactly for the recorded kernel. With `shake_prob`,
that share of the kernels are `kernels.shake` camera shake (the rest of `motion_prob` stays
`kernels.motion`); `quantize` rounds the noisy result to 8 bits as a camera file would (then it is
clipped to [0, 1] and the identity above holds only up to the rounding).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.signal import fftconvolve

from unroll import kernels as _kernels


def blur_host(u: np.ndarray, h: np.ndarray) -> np.ndarray:
    """`[H, W, C]` image convolved with a `[kh, kw]` kernel, symmetric boundary, same size.

    Equals `unroll.ops.blur(u[None], h[None], "symmetric")[0]`: pad by half the kernel with mirrored
    edges (np.pad "symmetric" = scipy convolve2d "symm"), then keep the 'valid' FFT convolution.
    """
    kh, kw = h.shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel sizes must be odd, got {kh}x{kw}")
    if kh > u.shape[0] or kw > u.shape[1]:
        raise ValueError(f"kernel {kh}x{kw} is larger than the image {u.shape[0]}x{u.shape[1]}")
    padded = np.pad(u, ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)), mode="symmetric")
    out = fftconvolve(padded, h.astype(u.dtype)[:, :, None], mode="valid", axes=(0, 1))
    return out.astype(np.float32)


def scale_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """`[H, W, C]` image with its contrast scaled about each band's mean by `factor` (float32):
    a fainter scene, as haze or low sun make it. Blur commutes with it (kernels sum to one).

    >>> import numpy as np
    >>> scale_contrast(np.array([[[0.2], [0.6]]], np.float32), 0.5)[..., 0]
    array([[0.3, 0.5]], dtype=float32)
    """
    mean = image.mean(axis=(0, 1), keepdims=True)
    return (mean + np.float32(factor) * (image - mean)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Degradation:
    """Random blur and noise: a `kernels.motion` kernel with probability `motion_prob`, a
    `kernels.shake` kernel with probability `shake_prob`, else a Gaussian with sigma ~ U[sigma_range];
    noise std `noise` (a float, or a (low, high) range sampled per image as
    `low + (high - low) * U[0, 1] ** noise_power`: 1 is uniform, 2 puts half the draws in the lowest
    quarter of the range, where clean-scene quality is decided); with `quantize`, the
    noisy blurred image clipped to [0, 1] and rounded to multiples of 1/255 (8 bits).

    With `shake_prob` = 0 and `quantize` off, the random draws and results are exactly those of the
    generator before these options existed."""

    kernel_size: int = 15
    sigma_range: tuple[float, float] = (0.2, 4.0)
    noise: float | tuple[float, float] = 0.0
    motion_prob: float = 0.0
    shake_prob: float = 0.0
    quantize: bool = False
    noise_power: float = 1.0

    def __post_init__(self):
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {self.kernel_size}")
        lo, hi = self.sigma_range
        if not 0 < lo <= hi:
            raise ValueError(f"sigma_range must satisfy 0 < low <= high, got {self.sigma_range}")
        nlo, nhi = self._noise_range()
        if not 0 <= nlo <= nhi:
            raise ValueError(f"noise must be >= 0 (or a range 0 <= low <= high), got {self.noise}")
        if not self.noise_power > 0:
            raise ValueError(f"noise_power must be > 0, got {self.noise_power}")
        if not 0 <= self.motion_prob <= 1:
            raise ValueError(f"motion_prob must be in [0, 1], got {self.motion_prob}")
        if not (0 <= self.shake_prob <= 1 and self.motion_prob + self.shake_prob <= 1 + 1e-9):
            raise ValueError(f"shake_prob must be in [0, 1] with motion_prob + shake_prob <= 1, got "
                             f"{self.shake_prob} with motion_prob {self.motion_prob}")

    def _noise_range(self) -> tuple[float, float]:
        if isinstance(self.noise, (tuple, list)):
            return float(self.noise[0]), float(self.noise[1])
        return float(self.noise), float(self.noise)

    def sample_kernel(self, rng: np.random.Generator) -> np.ndarray:
        # One uniform draw picks the kind, and none when only Gaussians are possible.
        if self.motion_prob > 0 or self.shake_prob > 0:
            pick = rng.random()
            if pick < self.motion_prob:
                return _kernels.motion(self.kernel_size, rng)
            if pick < self.motion_prob + self.shake_prob:
                return _kernels.shake(self.kernel_size, rng)
        return _kernels.gaussian(self.kernel_size, float(rng.uniform(*self.sigma_range)))

    def __call__(self, sharp: np.ndarray, rng: np.random.Generator):
        """(blurred, kernel) for a sharp `[H, W, C]` image; the rng draws kernel, then noise."""
        kernel = self.sample_kernel(rng)
        return self.apply(sharp, kernel, rng), kernel

    def apply(self, sharp: np.ndarray, kernel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """`sharp` blurred by the given `kernel`, then this degradation's noise (drawn from `rng`)
        and quantisation."""
        blurred = blur_host(sharp, kernel)
        nlo, nhi = self._noise_range()
        if nlo == nhi:
            sigma_n = nlo
        elif self.noise_power == 1:  # the same draw as before the option existed
            sigma_n = float(rng.uniform(nlo, nhi))
        else:
            sigma_n = nlo + (nhi - nlo) * float(rng.random()) ** self.noise_power
        if sigma_n > 0:
            blurred += np.float32(sigma_n) * rng.standard_normal(blurred.shape, dtype=np.float32)
        if self.quantize:
            blurred = (np.round(np.clip(blurred, 0, 1) * 255) / 255).astype(np.float32)
        return blurred

