"""Tiled inference for images of any size: overlapping tiles, smooth blending, one compiled shape.

Layout (`tile_positions`): tiles of `tile` pixels start every `tile - overlap` pixels; the last one
is moved back to end at the image's edge, so every tile lies inside the image and only an image
smaller than the tile needs padding (symmetric, like the model's own boundary). Every tile then has
the same shape and the model compiles once.

Blending (`axis_weights`, `tile_weights`): along each axis, between two neighbouring tiles, a
raised-cosine transition (weights sin^2 rising, 1 - sin^2 falling) of `overlap - 2 * (overlap // 4)`
pixels sits in the middle of their overlap. The outer `overlap // 4` pixels of each tile next to a
neighbour get weight 0: tile borders are where a tile's output differs most from whole-image
inference (the network sees a boundary there). With `2 * overlap <= tile` the transitions of one
tile never meet, so the 1-D weights of all tiles sum exactly to one at every pixel, and so do their
separable 2-D products. The accumulated weights are still divided out (guarding rounding).

Consequence, tested: for a model whose receptive-field radius is at most `overlap // 4` (a local
filter), tiled output equals whole-image output (tiles covering the image need no padding). MGSTNet
is not such a model: its kernel step and channel attention are global per tile, so a kernel is
estimated per tile (slowly varying blur) and tiles match whole-image output only approximately.

Memory: the model sees one tile at a time. `tiled_bands` yields the blended output a band of tile
rows at a time and reads the input through windows (`ImageWindows` converts a stored 8/16-bit scene
one window at a time), so the host holds the stored scene and one band, and writers can stream the
bands to disk; `deblur_tiled` collects them into one float32 array.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from unroll.progress import Progress

PredictTile = Callable[[np.ndarray], tuple]  # [1, t, t, C] -> (restored [1, t, t, C], kernel or None)


def check_tiling(tile: int, overlap: int):
    if tile < 1:
        raise ValueError(f"tile size must be positive, got {tile}")
    if overlap < 0 or 2 * overlap > tile:
        raise ValueError(f"overlap must satisfy 0 <= 2 * overlap <= tile ({tile}), got {overlap}")


def tile_positions(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one axis of length `size` (see the module docstring).

    Consecutive tiles overlap by at least `overlap`; `[0]` when the axis fits in one tile.
    """
    check_tiling(tile, overlap)
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if size <= tile:
        return [0]
    return list(range(0, size - tile, tile - overlap)) + [size - tile]


# Fitted tile sides are multiples of this: few distinct compiled shapes (at most tile / 32 of them),
# and every multi-scale network's downsampling divides them.
TILE_MULTIPLE = 32


def fit_tile(shape: tuple[int, int], tile: int, overlap: int, multiple: int = TILE_MULTIPLE) -> int:
    """The tile side to run for a scene of `shape` (H, W) when at most `tile` is asked for: the
    smallest multiple of `multiple` that needs no more tiles along either axis than `tile` does.

    Tiles of side `tile` start every `tile - overlap` pixels, so a scene just a little longer than
    a whole number of strides gets one more tile, and the tiles overlap far more than `overlap`:
    2048 px in 512 px tiles with overlap 32 takes 5 tiles an axis, 1.56 times the scene's pixels.
    The same 5 tiles need only be ceil((2048 + 4 * 32) / 5) = 436 px, fitted to 448: 1.20 times
    the pixels, at the same memory bound (the fitted side never exceeds `tile`). A scene smaller
    than `tile` gets one tile of its own size, rounded up, instead of one padded to `tile`.

    >>> fit_tile((2048, 2048), 512, 32), fit_tile((300, 200), 512, 32), fit_tile((1024, 1024), 512, 32)
    (448, 320, 384)
    """
    check_tiling(tile, overlap)
    need = max(1, 2 * overlap)
    for size in shape:
        count = len(tile_positions(size, tile, overlap))
        # `count` tiles of side t cover `size` when size - t <= (count - 1) (t - overlap).
        need = max(need, -(-(size + (count - 1) * overlap) // count))
    return min(tile, -(-need // multiple) * multiple)


def _rise(x: np.ndarray, start: int, length: int) -> np.ndarray:
    """0 before `start`, a raised cosine over `length` pixels, 1 after (a step when length is 0)."""
    if length == 0:
        return (x >= start).astype(np.float64)
    t = np.clip((x - start + 0.5) / length, 0.0, 1.0)
    return np.sin(0.5 * np.pi * t) ** 2


def axis_weights(size: int, tile: int, overlap: int) -> list[np.ndarray]:
    """Blending weights of each tile along one axis: arrays of length `min(tile, size)`."""
    starts = tile_positions(size, tile, overlap)
    margin = overlap // 4
    ramp = overlap - 2 * margin
    # Transition between tiles i and i+1: centred in their overlap [starts[i+1], starts[i] + tile).
    zones = [b + (a + tile - b - ramp) // 2 for a, b in zip(starts, starts[1:])]
    weights = []
    for i, a in enumerate(starts):
        x = np.arange(a, a + min(tile, size))
        w = np.ones(len(x))
        if i > 0:
            w *= _rise(x, zones[i - 1], ramp)
        if i < len(starts) - 1:
            w *= 1.0 - _rise(x, zones[i], ramp)
        weights.append(w.astype(np.float32))
    return weights


def tile_weights(shape: tuple[int, int], tile: int, overlap: int):
    """Yield `(top, left, weight [h, w])` for every tile of an image of `shape` (H, W)."""
    height, width = shape
    rows = zip(tile_positions(height, tile, overlap), axis_weights(height, tile, overlap))
    cols = list(zip(tile_positions(width, tile, overlap), axis_weights(width, tile, overlap)))
    for top, wy in rows:
        for left, wx in cols:
            yield top, left, wy[:, None] * wx[None, :]


def _pad_to(crop: np.ndarray, tile: int) -> np.ndarray:
    h, w = crop.shape[:2]
    if h == tile and w == tile:
        return crop
    return np.pad(crop, ((0, tile - h), (0, tile - w), (0, 0)), mode="symmetric")


@dataclasses.dataclass
class TiledResult:
    image: np.ndarray                 # float32 [H, W, C], blended
    kernels: np.ndarray | None        # [rows, cols, k, k]: the kernel of each tile (None if none)
    rows: list[int]                   # tile start rows
    cols: list[int]                   # tile start columns


def tiled_bands(predict_tile: PredictTile, image, tile: int, overlap: int, *, progress: bool = True,
                kernels: list | None = None):
    """Run `predict_tile` on every overlapping tile of `image` and yield the blended output in row
    bands `(top, rows float32 [h, W, C])`, top to bottom, each as soon as no later tile touches it.

    `image` is an array `[H, W, C]` or any object with that `shape` whose `image[rows, cols]` gives a
    float32 window (e.g. `ImageWindows`: a stored 8/16-bit scene converted a window at a time), so
    the host holds the stored scene, one band of tile rows and no float copy of the scene.
    `predict_tile([1, tile, tile, C]) -> (restored [1, tile, tile, C], kernel [1, k, k] or None)` may
    return JAX arrays: the next tile is dispatched before the previous one is copied back. Each tile's
    kernel is appended to `kernels` (row-major) when a list is given.
    """
    height, width, channels = image.shape
    span = min(tile, height)
    acc = np.zeros((span, width, channels), np.float32)  # rows [band_top, band_top + span)
    weight_sum = np.zeros((span, width), np.float32)
    bar = Progress(num_tiles((height, width), tile, overlap), "tiles", enabled=progress)
    done = [0]

    def collect(pending, band_top):
        top, left, weight, (restored, kernel) = pending
        h, w = weight.shape
        restored = np.asarray(restored, np.float32).reshape(tile, tile, channels)[:h, :w]
        r = top - band_top
        acc[r:r + h, left:left + w] += weight[:, :, None] * restored
        weight_sum[r:r + h, left:left + w] += weight
        if kernels is not None:
            kernels.append(None if kernel is None else np.asarray(kernel, np.float32).reshape(
                np.shape(kernel)[-2:]))
        done[0] += 1
        bar.update(done[0])

    def finished(count):
        return acc[:count] / np.maximum(weight_sum[:count], np.float32(1e-6))[:, :, None]

    band_top, pending = 0, None
    for top, left, weight in tile_weights((height, width), tile, overlap):  # row by row
        if top > band_top:  # a new row of tiles: the rows above `top` get no more tiles
            collect(pending, band_top)
            pending, shift = None, top - band_top
            yield band_top, finished(shift)
            acc[:span - shift], weight_sum[:span - shift] = acc[shift:], weight_sum[shift:]
            acc[span - shift:], weight_sum[span - shift:] = 0, 0
            band_top = top
        h, w = weight.shape
        crop = _pad_to(np.asarray(image[top:top + h, left:left + w], np.float32), tile)[None]
        current = (top, left, weight, predict_tile(crop))
        if pending is not None:
            collect(pending, band_top)
        pending = current
    collect(pending, band_top)
    yield band_top, finished(height - band_top)


def deblur_tiled(predict_tile: PredictTile, image, tile: int, overlap: int, *,
                 progress: bool = True) -> TiledResult:
    """Run `predict_tile` on every overlapping `tile` x `tile` crop of `image` ([H, W, C] or
    [1, H, W, C], or windows as in `tiled_bands`) and blend the outputs into one float32 array."""
    if isinstance(image, np.ndarray) or not hasattr(image, "shape"):
        image = np.asarray(image, np.float32)
        if image.ndim == 4 and image.shape[0] == 1:
            image = image[0]
    if len(image.shape) != 3:
        raise ValueError(f"expected an image [H, W, C] or [1, H, W, C], got {image.shape}")
    height, width, _ = image.shape
    out = np.empty(image.shape, np.float32)
    kernels: list = []
    for top, block in tiled_bands(predict_tile, image, tile, overlap, progress=progress,
                                  kernels=kernels):
        out[top:top + len(block)] = block
    rows, cols = tile_positions(height, tile, overlap), tile_positions(width, tile, overlap)
    stacked = None
    if kernels[0] is not None:
        stacked = np.stack(kernels).reshape(len(rows), len(cols), *kernels[0].shape)
    return TiledResult(out, stacked, rows, cols)


class ImageWindows:
    """A stored scene `[H, W, B]` (any dtype) seen as float32 windows `[h, w, C]`: `convert` maps a
    stored window to model input (scaling, band conversion). Windows are converted on access, so
    no float copy of the whole scene exists."""

    def __init__(self, stored, convert: Callable[[np.ndarray], np.ndarray], channels: int):
        self.stored, self.convert = stored, convert
        self.shape = (*stored.shape[:2], channels)

    def __getitem__(self, key):
        return np.asarray(self.convert(self.stored[key]), np.float32)


def texture_crops(image: np.ndarray, tile: int, count: int) -> list[tuple[int, int]]:
    """The `count` tile positions (of the `tile_positions` grid, no overlap) with the most
    gradient energy: blur is best identified where there are edges, not on water or sky."""
    height, width = image.shape[:2]
    scores = []
    for top in tile_positions(height, tile, 0):
        for left in tile_positions(width, tile, 0):
            crop = image[top:top + tile, left:left + tile]
            energy = (np.abs(np.diff(crop, axis=0)).mean() if crop.shape[0] > 1 else 0.0) + (
                np.abs(np.diff(crop, axis=1)).mean() if crop.shape[1] > 1 else 0.0)
            scores.append((float(energy), top, left))
    scores.sort(key=lambda s: -s[0])
    return [(top, left) for _, top, left in scores[:max(1, count)]]


def crop_tile(image: np.ndarray, top: int, left: int, tile: int) -> np.ndarray:
    """`[1, tile, tile, C]` crop at (top, left), padded symmetrically where the image is smaller."""
    return _pad_to(np.asarray(image[top:top + tile, left:left + tile], np.float32), tile)[None]


def num_tiles(shape: tuple[int, int], tile: int, overlap: int) -> int:
    return math.prod(len(tile_positions(s, tile, overlap)) for s in shape)


__all__ = ["ImageWindows", "TILE_MULTIPLE", "TiledResult", "axis_weights", "check_tiling", "crop_tile",
           "deblur_tiled", "fit_tile", "num_tiles", "texture_crops", "tile_positions", "tile_weights", "tiled_bands"]
