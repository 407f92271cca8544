"""Input forms of the classical solver and its check: [H, W], [N, H, W], [H, W, C], [N, H, W, C].

>>> import numpy as np
>>> as_batch(np.zeros((32, 32, 3)))[0].shape, as_batch(np.zeros((2, 32, 32)))[1]
((1, 32, 32, 3), 'NHW')
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from unroll.verdict import LUMA as _LUMA

LUMA = np.array(_LUMA, np.float32)  # BT.601, as `unroll.data.load_image` converts RGB


LAYOUTS = ("HW", "NHW", "HWC", "NHWC")


def _layout(shape, layout):
    """The layout of an input of `shape`: `layout` checked against it, or inferred (see
    `blind_deconvolve`)."""
    if layout is None:
        inferred = {2: "HW", 4: "NHWC"}.get(len(shape))
        if len(shape) == 3:
            inferred = "HWC" if shape[-1] <= 4 else "NHW"
        if inferred is None:
            raise ValueError(f"g must be [H, W], [N, H, W], [H, W, C] or [N, H, W, C], got shape {shape}")
        return inferred
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if len(layout) != len(shape):
        raise ValueError(f"layout {layout!r} needs a {len(layout)}-D array, got shape {shape}")
    return layout


def as_batch(g, layout=None):
    """(g [N, H, W, C] float32, layout) from any accepted input form (`blind_deconvolve`)."""
    g = jnp.asarray(g, jnp.float32)
    layout = _layout(tuple(g.shape), layout)
    g4 = g if layout == "NHWC" else g[..., None] if layout == "NHW" else g[None] if layout == "HWC" \
        else g[None, ..., None]
    return g4, layout


def from_batch(x, layout):
    """Images [N, H, W, C] or kernels [N, k, k] back in the form of an input of `layout`."""
    if x.ndim == 3:  # kernels: [N, k, k] for a batch, [k, k] for one image
        return x if layout.startswith("N") else x[0]
    return {"NHWC": x, "NHW": x[..., 0], "HWC": x[0], "HW": x[0, ..., 0]}[layout]


def luminance(g4):
    """[N, H, W, C] -> [N, H, W]: the BT.601 luminance for C = 3 (as `unroll.data.load_image`
    converts RGB to gray), the band mean otherwise."""
    if g4.shape[-1] == 3:
        return g4 @ jnp.asarray(LUMA)
    return jnp.mean(g4, axis=-1)
