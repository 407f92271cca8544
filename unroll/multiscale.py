"""Multi-scale helpers of the CNN baselines (MADN, IDC, MTWDN) and their losses: pure JAX, no Flax.

Images are `[N, H, W, C]`. The baselines pad their input (symmetric, bottom/right) to a multiple of
4 x 2^(scales-1) (`pad_to_multiple`), build an image pyramid by exact x0.5 resizes (`pyramid`), run
one network coarse to fine on [blur_i, up(previous result)] (`coarse_to_fine`) and crop every output
back to ceil(H / 2^s) x ceil(W / 2^s) at scale s (`crop_scales`). The losses bring the sharp image
to each output's scale the same way (`target_like`). MADN's gradient operator M (Sobel magnitude,
`gradient_map`) is here too, since its loss needs it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp


def pad_to_multiple(x, multiple: int):
    """Symmetric padding at the bottom/right of `[N, H, W, C]` up to multiples of `multiple`.

    Padding on one side only keeps pixel (0, 0) of every scale aligned with the unpadded image,
    so that a coarse output cropped to its top-left corner matches `downsample(sharp, factor)`.

    >>> pad_to_multiple(jnp.zeros((1, 5, 8, 3)), 4).shape
    (1, 8, 8, 3)
    """
    ph, pw = -x.shape[1] % multiple, -x.shape[2] % multiple
    if not (ph or pw):
        return x
    return jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="symmetric")


def crop(x, height: int, width: int):
    """The top-left `height` x `width` pixels of `[N, H, W, C]`."""
    return x[:, :height, :width, :]


def scaled_size(size: int, factor: int) -> int:
    """Size of a full-resolution length `size` at a scale `factor` (a power of 2) coarser.

    >>> scaled_size(21, 4)
    6
    """
    return -(-size // factor)


def resize(x, height: int, width: int, method: str):
    """`jax.image.resize` of `[N, H, W, C]` to `height` x `width` (antialiased); `x` itself when the
    size is already right."""
    if x.shape[1:3] == (height, width):
        return x
    return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), method)


def downsample(x, factor: int, method: str):
    """`x` at a scale `factor` (a power of 2) coarser, `[N, ceil(H/f), ceil(W/f), C]`.

    Padded like the models' inputs and resized by exactly 1/factor (antialiased), so that targets
    and outputs cover the same pixels for any image size.

    >>> downsample(jnp.ones((1, 21, 19, 3)), 4, "linear").shape
    (1, 6, 5, 3)
    """
    if factor == 1:
        return x
    p = pad_to_multiple(x, factor)
    y = resize(p, p.shape[1] // factor, p.shape[2] // factor, method)
    return crop(y, scaled_size(x.shape[1], factor), scaled_size(x.shape[2], factor))


def factor_of(full_shape, shape) -> int:
    """The power-of-2 scale factor f with ceil(H / f), ceil(W / f) = the coarse size.

    >>> factor_of((1, 21, 19, 3), (1, 6, 5, 3))
    4
    """
    (H, W), (h, w) = full_shape[1:3], shape[1:3]
    f = 1
    while f <= max(H, W):
        if (scaled_size(H, f), scaled_size(W, f)) == (h, w):
            return f
        f *= 2
    raise ValueError(f"{tuple(shape)} is not a power-of-2 scale of {tuple(full_shape)}")


def target_like(sharp, output, method: str):
    """The ground truth at the scale of `output` (the loss-side twin of the models' pyramids)."""
    return downsample(sharp, factor_of(sharp.shape, output.shape), method)


def pyramid(x, scales: int, method: str):
    """x at scales 2^(scales-1), ..., 2, 1, coarse to fine; x's size must be a multiple of
    2^(scales-1) (every level is an exact x0.5 resize of the full image).

    >>> [p.shape[1] for p in pyramid(jnp.zeros((1, 16, 16, 1)), 3, "linear")]
    [4, 8, 16]
    """
    H, W = x.shape[1:3]
    return tuple(resize(x, H >> s, W >> s, method) for s in reversed(range(scales)))


def coarse_to_fine(step: Callable[[jax.Array], Any], x, scales: int, method: str,
                   image: Callable[[Any], jax.Array] = lambda out: out) -> list:
    """The scale-recurrent loop of MADN's SN, IDC and MTWDN: one `step` (the same weights at every
    scale) on [blur_i, up(I_{i+1})], coarse to fine; the coarsest scale sees blur_k twice.

    `x` is the padded input (a multiple of 2^(scales-1)); `step` maps the 2C-channel input to its
    output, whose restored image `image(output)` is resized (`method`) into the next finer scale's
    input. Returns the outputs of every scale, coarse to fine, at the padded pyramid's sizes.

    >>> outs = coarse_to_fine(lambda z: z[..., :1] + z[..., 1:], jnp.ones((1, 8, 8, 1)), 2, "linear")
    >>> [o.shape[1] for o in outs], round(float(outs[-1][0, 0, 0, 0]), 4)
    ([4, 8], 3.0)
    """
    outputs, previous = [], None
    for blur in pyramid(x, scales, method):
        h, w = blur.shape[1:3]
        previous = blur if previous is None else resize(previous, h, w, method)
        out = step(jnp.concatenate([blur, previous], axis=-1))
        previous = image(out)
        outputs.append(out)
    return outputs


def crop_scales(xs: Sequence, height: int, width: int) -> tuple:
    """Crop the per-scale outputs `xs` (coarse to fine, the last at full resolution) of a padded
    `height` x `width` input to ceil(height / 2^s) x ceil(width / 2^s) at scale s."""
    scales = len(xs)
    return tuple(crop(x, scaled_size(height, 2 ** s), scaled_size(width, 2 ** s))
                 for x, s in zip(xs, reversed(range(scales))))


# --- Gradient operator M (MADN, Section 3.1: Sobel) -----------------------------------------------

GRADIENT_EPS = 1e-6


def sobel(x):
    """Sobel derivatives (d/dx along W, d/dy along H) of every channel, symmetric boundary, the
    unnormalised 3x3 kernels [1, 2, 1] x [-1, 0, 1] (as scipy.ndimage.sobel with mode='reflect').

    >>> gx, gy = sobel(jnp.arange(16.0).reshape(1, 4, 4, 1))
    >>> float(gx[0, 1, 1, 0]), float(gy[0, 1, 1, 0])
    (8.0, 32.0)
    """
    p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="symmetric")
    rows = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]          # smoothing along H
    cols = p[:, :, :-2] + 2 * p[:, :, 1:-1] + p[:, :, 2:]  # smoothing along W
    gx = rows[:, :, 2:] - rows[:, :, :-2]
    gy = cols[:, 2:] - cols[:, :-2]
    return gx, gy


def gradient_map(x, eps: float = GRADIENT_EPS):
    """M(x): per-channel Sobel gradient magnitude sqrt(gx^2 + gy^2 + eps), `[N, H, W, C]`.

    The magnitude (as in SPSR, which MADN's GN follows) keeps the image's channels, so the same
    discriminator judges images and gradient maps (MADN eqs. 16, 20); eps keeps its derivative
    finite on flat regions.
    """
    gx, gy = sobel(x)
    return jnp.sqrt(gx ** 2 + gy ** 2 + eps)
