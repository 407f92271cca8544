"""Initial kernels h_0 for a warm-started MGSTNet (`Config.kernel_init="classical"`, beyond the
paper): the classical blind solver's estimate (`unroll.classical.l0.estimate_kernel`) of each image's
kernel, from its luminance, and the uniform kernel (the paper's h_0) wherever no estimate can be
trusted: an image smaller than twice the kernel, or an estimate that is not a finite kernel.
"""

from __future__ import annotations

import numpy as np

from unroll import kernels
from unroll.classical.l0 import DEFAULTS, L0Params, estimate_kernel


def initial_kernels(g, kernel_size: int, params: L0Params = DEFAULTS) -> np.ndarray:
    """h_0 `[N, k, k]` for images `g [N, H, W, C]`: the classical estimate from the luminance, or
    the uniform kernel where the image is too small for it (`min(H, W) < 2 k`) or it is not finite.

    >>> h0 = initial_kernels(np.full((2, 20, 20, 3), 0.5, np.float32), 15)  # too small: uniform
    >>> h0.shape, bool(np.allclose(h0, 1 / 225))
    ((2, 15, 15), True)
    """
    g = np.asarray(g, np.float32)
    if g.ndim != 4:
        raise ValueError(f"expected images [N, H, W, C], got shape {g.shape}")
    n, height, width = g.shape[:3]
    uniform = np.broadcast_to(kernels.uniform(kernel_size), (n, kernel_size, kernel_size))
    if 2 * kernel_size > min(height, width):
        return np.array(uniform)
    h = np.asarray(estimate_kernel(g, kernel_size, params, layout="NHWC"), np.float32)  # luminance
    ok = np.all(np.isfinite(h), axis=(1, 2)) & (np.abs(h.sum(axis=(1, 2)) - 1) < 1e-3)
    return np.where(ok[:, None, None], h, uniform).astype(np.float32)


def warm_start(config):
    """The host function `g [N, H, W, C] -> h_0 [N, k, k]` that a `Config`'s `kernel_init` asks
    for at inference and evaluation: None for "uniform" (the model's own h_0), else
    `initial_kernels` at the configuration's kernel size."""
    if config.kernel_init == "uniform":
        return None
    return lambda g: initial_kernels(g, config.kernel_size)
