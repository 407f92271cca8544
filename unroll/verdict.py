"""Is a restoration worse than its input? The traceable form of `unroll.classical.check_restoration`
(whose module docstring has the features, the thresholds and their calibration), for use inside jit:
MGSTNet's warm start (`image_init="nonblind"`) keeps the non-blind restoration only where it passes.
"""

from __future__ import annotations

import jax.numpy as jnp

LUMA = (0.299, 0.587, 0.114)  # BT.601, as unroll.classical.layout

MAX_RANGE_RATIO = 1.4
MAX_KERNEL_SPREAD = 0.2


def passes(g, u, h):
    """`unroll.classical.check_restoration(...).ok` as a traceable function, for use inside jit: images `g`, `u`
    `[N, H, W, C]` and kernels `h` `[N, k, k]` -> bool `[N]` (same features and thresholds; the
    percentiles are jnp's linear interpolation, as numpy's default).

    >>> import jax, numpy as np
    >>> from unroll import kernels
    >>> g = np.random.default_rng(0).random((1, 64, 64, 1)).astype(np.float32)
    >>> h = kernels.delta(9)[None]
    >>> np.asarray(jax.jit(passes)(g, g, h)), np.asarray(passes(g, 3 * g, h))
    (array([ True]), array([False]))
    """
    k = h.shape[-1]
    r = k // 2
    H, W = g.shape[1:3]

    def spread(x):
        x = x @ jnp.asarray(LUMA) if x.shape[-1] == 3 else jnp.mean(x, axis=-1)
        x = x[:, r:H - r, r:W - r].reshape(x.shape[0], -1)
        lo, hi = jnp.percentile(x, jnp.array([0.5, 99.5]), axis=1)
        return hi - lo

    ratio = spread(u) / jnp.maximum(spread(g), 1e-3)
    yy, xx = jnp.mgrid[:k, :k]
    mass = jnp.maximum(h.sum(axis=(1, 2)), 1e-12)
    cy = jnp.sum(h * yy, axis=(1, 2)) / mass
    cx = jnp.sum(h * xx, axis=(1, 2)) / mass
    radius = jnp.sqrt(jnp.sum(h * ((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2),
                              axis=(1, 2)) / mass) / k
    return jnp.maximum(ratio / MAX_RANGE_RATIO, radius / MAX_KERNEL_SPREAD) - 1 <= 0
