"""Initial kernels h_0 for a warm-started MGSTNet (`Config.kernel_init="classical"`, beyond the
paper): the classical blind solver's estimate (`unroll.classical.l0.estimate_kernel`) of each image's
kernel, from its luminance, and the uniform kernel (the paper's h_0) wherever no estimate can be
trusted: an image smaller than twice the kernel, or an estimate that is not a finite kernel. An
estimate whose restoration fails the no-reference check is retried once in a window 1.5x as large
(the classical fallback's first retry: a blur nearly as large as the window gives an estimate that
fills it, which the check takes for a failure), cropped back to the kernel size where that passes.
Each h_0 comes with whether it is trusted (its restoration passed the check, in its own window),
which `MGSTNet(image_init="nonblind")` takes in place of its in-graph check at inference.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from unroll import kernels, nonblind
from unroll.classical.check import check_restoration
from unroll.classical.l0 import DEFAULTS, GROW, L0Params, _odd, estimate_kernel, never_worse


def initial_state(g, kernel_size: int, params: L0Params = DEFAULTS, retry: bool = True):
    """(h_0 `[N, k, k]`, trusted `[N]` bool) for images `g [N, H, W, C]`.

    h_0: the classical estimate from the luminance, or the uniform kernel where the image is too
    small for it (`min(H, W) < 2 k`) or it is not finite. trusted: whether the non-blind
    restoration with h_0 passes `check_restoration`. With `retry`, an estimate that fails is redone
    in a window 1.5x as large (where the image holds it) and, if that passes, cropped to k about its
    centre of mass (`l0.never_worse`'s first retry) and trusted: judged in its own window, a blur
    nearly as large as k no longer looks like a diffuse failure. Otherwise the first estimate stays,
    untrusted (the network was trained on such failed estimates, with u_0 = g).

    >>> h0, trusted = initial_state(np.full((2, 20, 20, 3), 0.5, np.float32), 15)  # too small
    >>> h0.shape, bool(np.allclose(h0, 1 / 225)), trusted.tolist()
    ((2, 15, 15), True, [False, False])
    """
    g = np.asarray(g, np.float32)
    if g.ndim != 4:
        raise ValueError(f"expected images [N, H, W, C], got shape {g.shape}")
    n, height, width = g.shape[:3]
    uniform = np.broadcast_to(kernels.uniform(kernel_size), (n, kernel_size, kernel_size))
    if 2 * kernel_size > min(height, width):
        return np.array(uniform), np.zeros(n, bool)
    h = np.asarray(estimate_kernel(g, kernel_size, params, layout="NHWC"), np.float32)  # luminance
    ok = np.all(np.isfinite(h), axis=(1, 2)) & (np.abs(h.sum(axis=(1, 2)) - 1) < 1e-3)
    h = np.where(ok[:, None, None], h, uniform).astype(np.float32)
    u = np.asarray(nonblind.deconvolve_batch(jnp.asarray(g), jnp.asarray(h)))
    trusted = check_restoration(g, u, h, layout="NHWC").ok & ok
    larger = _odd(kernel_size * GROW)
    if retry and not trusted.all() and 2 * larger <= min(height, width):
        bad = np.flatnonzero(~trusted)
        _, retried, attempt = never_worse(g[bad], u[bad], h[bad], kernel_size, params, layout="NHWC",
                                          retry_sizes=(larger,))
        won = bad[np.asarray(attempt) == 1]
        h[won] = np.asarray(retried)[np.asarray(attempt) == 1]
        trusted[won] = True
    return h, trusted


def initial_kernels(g, kernel_size: int, params: L0Params = DEFAULTS, retry: bool = True) -> np.ndarray:
    """h_0 of `initial_state` alone.

    >>> h0 = initial_kernels(np.full((2, 20, 20, 3), 0.5, np.float32), 15)  # too small: uniform
    >>> h0.shape, bool(np.allclose(h0, 1 / 225))
    ((2, 15, 15), True)
    """
    return initial_state(g, kernel_size, params, retry)[0]


def warm_start(config):
    """The host function `g [N, H, W, C] -> (h_0 [N, k, k], trusted [N])` that a `Config`'s
    `kernel_init` asks for at inference and evaluation: None for "uniform" (the model's own h_0),
    else `initial_state` at the configuration's kernel size (`MGSTNet(g, h0, trusted=...)`)."""
    if config.kernel_init == "uniform":
        return None
    return lambda g: initial_state(g, config.kernel_size)
