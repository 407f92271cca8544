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

Memory: the model sees one tile at a time; the host holds the input, the float32 output and one
float32 weight plane (`deblur_tiled`), so the device memory depends on the tile, not the scene.
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


def deblur_tiled(predict_tile: PredictTile, image, tile: int, overlap: int, *,
                 progress: bool = True) -> TiledResult:
    """Run `predict_tile` on every overlapping `tile` x `tile` crop of `image` ([H, W, C] or
    [1, H, W, C]) and blend the outputs (see the module docstring).

    `predict_tile([1, tile, tile, C]) -> (restored [1, tile, tile, C], kernel [1, k, k] or None)` may
    return JAX arrays: the next tile is dispatched before the previous one is copied back, so host
    work overlaps device work.
    """
    image = np.asarray(image, np.float32)
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3:
        raise ValueError(f"expected an image [H, W, C] or [1, H, W, C], got {image.shape}")
    height, width, channels = image.shape
    rows = tile_positions(height, tile, overlap)
    cols = tile_positions(width, tile, overlap)
    out = np.zeros(image.shape, np.float32)
    total_weight = np.zeros((height, width), np.float32)
    kernels: list = []
    bar = Progress(len(rows) * len(cols), "tiles", enabled=progress)

    def collect(pending):
        top, left, weight, (restored, kernel) = pending
        h, w = weight.shape
        restored = np.asarray(restored, np.float32).reshape(tile, tile, channels)[:h, :w]
        out[top:top + h, left:left + w] += weight[:, :, None] * restored
        total_weight[top:top + h, left:left + w] += weight
        kernels.append(None if kernel is None else np.asarray(kernel, np.float32).reshape(
            np.shape(kernel)[-2:]))
        bar.update(len(kernels))

    pending = None
    for top, left, weight in tile_weights((height, width), tile, overlap):
        h, w = weight.shape
        crop = _pad_to(image[top:top + h, left:left + w], tile)[None]
        current = (top, left, weight, predict_tile(crop))
        if pending is not None:
            collect(pending)
        pending = current
    collect(pending)
    out /= np.maximum(total_weight, np.float32(1e-6))[:, :, None]
    stacked = None
    if kernels[0] is not None:
        stacked = np.stack(kernels).reshape(len(rows), len(cols), *kernels[0].shape)
    return TiledResult(out, stacked, rows, cols)


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


__all__ = ["TiledResult", "axis_weights", "check_tiling", "crop_tile",
           "deblur_tiled", "num_tiles", "texture_crops", "tile_positions", "tile_weights"]
