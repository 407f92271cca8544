"""Fixed evaluation sets: whole images, each blurred with its own fixed, reproducible kernel and noise."""

from __future__ import annotations

import collections.abc
import zlib

import numpy as np

from unroll.data.degradation import Degradation, scale_contrast
from unroll.data.images import DataError
from unroll.data.sources import _drop_small, open_source


def example_rng(name: str, seed: int) -> np.random.Generator:
    """The generator of an evaluation image: a stable hash of its relative path and the base seed,
    so the same image gets the same blur and noise in every run and in any subset or order."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def _center_crop(arrays: list[np.ndarray], crop) -> list[np.ndarray]:
    if crop is None:
        return arrays
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    h, w = arrays[0].shape[:2]
    ch, cw = min(ch, h), min(cw, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return [np.ascontiguousarray(a[top:top + ch, left:left + cw]) for a in arrays]


class EvalSet(collections.abc.Sequence):
    """Whole evaluation images, one example at a time (sizes differ, so no batching).

    Examples: "blurred", "sharp" `[H, W, C]`, "kernel" `[k, k]` (absent for a paired folder without
    kernels/), "name" (relative path), "label" (-1 when none), "class_name" ("" when none).
    Each access recomputes the example deterministically (decoded images may be cached).
    """

    def __init__(self, source, degradation: Degradation, seed: int, center_crop, contrast: float = 1.0):
        self.source, self.degradation, self.seed, self.center_crop = (
            source, degradation, seed, center_crop)
        self.contrast = contrast

    def __len__(self) -> int:
        return len(self.source)

    @property
    def names(self) -> list[str]:
        return self.source.names

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        example = self.source[index % len(self)]
        classes = getattr(self.source, "class_names", ())
        label = int(example["label"])
        out = {"name": example["name"], "label": label,
               "class_name": classes[label] if label >= 0 else ""}
        if "image" in example:
            (sharp,) = _center_crop([example["image"]], self.center_crop)
            if self.contrast != 1:  # a fainter scene (haze): the same blur and noise draws
                sharp = scale_contrast(sharp, self.contrast)
            blurred, kernel = self.degradation(sharp, example_rng(example["name"], self.seed))
            out.update(blurred=blurred, sharp=sharp, kernel=kernel)
        else:
            blurred, sharp = _center_crop([example["blurred"], example["sharp"]], self.center_crop)
            out.update(blurred=blurred, sharp=sharp)
            if "kernel" in example:
                out["kernel"] = example["kernel"]
        return out


def make_eval_dataset(source_or_dir=None, *, kernel_size: int = 15, sigma_range=(0.2, 4.0),
                      noise=0.0, motion_prob: float = 0.0, seed: int = 0, channels: int = 3,
                      center_crop: int | tuple[int, int] | None = None,
                      process_index: int = 0, process_count: int = 1,
                      skip_bad: bool = False, shake_prob: float = 0.0,
                      quantize: bool = False, contrast: float = 1.0) -> EvalSet:
    """A fixed evaluation set (None -> built-in "test" split; a folder with blur/ and sharp/ is
    read as pairs, others are degraded with a per-image fixed blur and noise, see `example_rng`).

    `contrast` < 1 scales each synthesised scene's contrast about its mean before it is blurred
    (the sharp reference too): faint scenes, as haze or low sun make them.
    By default every process sees the whole set; pass `process_index`, `process_count` to shard it.
    """
    if not 0 < contrast <= 1:
        raise ValueError(f"contrast must be in (0, 1], got {contrast}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"need 0 <= process_index < process_count, got {process_index}, "
                         f"{process_count}")
    degradation = Degradation(kernel_size, tuple(sigma_range), noise, motion_prob, shake_prob,
                              bool(quantize))
    source = open_source(source_or_dir, channels=channels, split="test", skip_bad=skip_bad)
    if center_crop is not None:
        crop = (center_crop, center_crop) if isinstance(center_crop, int) else center_crop
        if min(crop) < kernel_size:
            raise ValueError(f"center_crop {center_crop} is smaller than kernel_size {kernel_size}")
    # Images at least as large as the kernel: synthetic blur needs it, and so does the model.
    source = _drop_small(source, kernel_size, skip_bad, "kernel size")
    if process_count > 1:
        shard = list(range(process_index, len(source), process_count))
        if not shard:
            raise DataError(f"process {process_index} of {process_count} gets no images from "
                            f"{source.root}")
        source = source.select(shard)
    return EvalSet(source, degradation, seed, center_crop, float(contrast))
