"""The training pipeline: a seeded, checkpointable grain iterator of degraded random crops."""

from __future__ import annotations

import dataclasses

import numpy as np

from unroll import kernels as _kernels
from unroll.data.degradation import Degradation, scale_contrast
from unroll.data.images import DataError
from unroll.data.sources import _drop_small, _is_paired, open_source


def _random_crop(arrays: list[np.ndarray], patch: int, rng: np.random.Generator):
    h, w = arrays[0].shape[:2]
    top, left = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
    return [a[top:top + patch, left:left + patch] for a in arrays]


def _dihedral(arrays: list[np.ndarray], rng: np.random.Generator):
    """The same random one of the 8 flips / 90-degree rotations for every array (the first two
    axes). Convolution commutes with them when the kernel gets the same transform."""
    turns, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = []
    for a in arrays:
        a = np.rot90(a, turns, axes=(0, 1))
        out.append(np.ascontiguousarray(a[:, ::-1] if flip else a))
    return out


LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601, as `load_image` converts RGB to gray


def _to_gray(image: np.ndarray) -> np.ndarray:
    """`[H, W, 3]` -> its BT.601 luminance replicated over the 3 channels (a new array)."""
    luma = image @ LUMA
    return np.ascontiguousarray(np.repeat(luma[:, :, None], image.shape[2], axis=2))


@dataclasses.dataclass(frozen=True)
class TrainTransform:
    """grain random map: crop a patch, flip / rotate, and degrade it (or crop a given pair).

    gray_prob: probability that an (unpaired) crop is made gray before it is degraded, so that an
      RGB model also learns gray inputs. At 0 no random number is drawn for it, so the batches are
      exactly those of a transform without it.
    contrast_min: each (unpaired) crop's contrast is scaled about its mean by c ~ U[contrast_min, 1]
      before it is degraded (the sharp target too), so that the network meets faint scenes (haze,
      low sun, smooth surfaces) and does not read low contrast as blur. At 1 nothing is drawn.
    initial_kernels: add "h0" = `kernels.perturb(kernel, rng)`, an initial kernel that errs as a
      classical blind estimator does, drawn after everything else from the same rng and in the
      crop's frame (for training a warm-started network). Off, nothing is drawn for it.
    kernel_bank: with `initial_kernels`, draw (kernel, h0) from this `unroll.classical.bank.KernelBank`
      instead (the estimator's real estimates of the kernel, made on other crops) and blur the crop
      with that kernel (`Degradation.apply`: its noise and quantisation).
    """

    patch_size: int
    degradation: Degradation
    paired: bool = False
    gray_prob: float = 0.0
    initial_kernels: bool = False
    kernel_bank: object = None
    contrast_min: float = 1.0

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        if self.initial_kernels and self.kernel_bank is not None and not self.paired:
            sharp = self._sharp(example, rng)
            kernel, h0 = self.kernel_bank.draw(rng)
            return {"blurred": self.degradation.apply(sharp, kernel, rng), "sharp": sharp,
                    "kernel": kernel, "h0": h0}
        out = self._degrade(example, rng)
        if self.initial_kernels:
            out["h0"] = _kernels.perturb(out["kernel"], rng)
        return out

    def _sharp(self, example: dict, rng: np.random.Generator) -> np.ndarray:
        (sharp,) = _dihedral(_random_crop([example["image"]], self.patch_size, rng), rng)
        if self.gray_prob > 0 and rng.random() < self.gray_prob:
            sharp = _to_gray(sharp)
        if self.contrast_min < 1:
            sharp = scale_contrast(sharp, rng.uniform(self.contrast_min, 1.0))
        return sharp

    def _degrade(self, example: dict, rng: np.random.Generator) -> dict:
        if self.paired:
            crops = _random_crop([example["blurred"], example["sharp"]], self.patch_size, rng)
            has_kernel = "kernel" in example
            out = _dihedral(crops + ([example["kernel"]] if has_kernel else []), rng)
            return dict(zip(("blurred", "sharp", "kernel"), out))
        sharp = self._sharp(example, rng)
        blurred, kernel = self.degradation(sharp, rng)
        return {"blurred": blurred, "sharp": sharp, "kernel": kernel}


# ----------------------------------------------------------------------------------------------------
# Training pipeline.


def _derive_seed(*parts: int) -> int:
    """A 32-bit seed from integers (grain's shuffle needs 0 <= seed < 2**32)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _process_defaults(process_index, process_count):
    if process_index is None or process_count is None:
        import jax  # only here: the pipeline itself never needs JAX

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"need 0 <= process_index < process_count, got {process_index}, "
                         f"{process_count}")
    return int(process_index), int(process_count)


def make_train_dataset(source_or_dir=None, *, patch_size: int, batch_size: int,
                       sigma_range=(0.2, 4.0), kernel_size: int = 15, noise=0.0,
                       motion_prob: float = 0.0, seed: int = 0, channels: int = 3,
                       process_index: int | None = None, process_count: int | None = None,
                       num_workers: int = 0, num_threads: int = 2, prefetch: int = 4,
                       skip_bad: bool = False, gray_prob: float = 0.0, shake_prob: float = 0.0,
                       quantize: bool = False, initial_kernels: bool = False,
                       noise_power: float = 1.0, kernel_bank=None, contrast_min: float = 1.0):
    """Infinite, seeded, checkpointable iterator of host batches for this process.

    Each batch is a dict of numpy arrays with a leading axis of `batch_size // process_count`:
    "blurred", "sharp" `[B, P, P, C]` and "kernel" `[B, k, k]` (for a PairedFolder: its kernels, or
    no "kernel" key when it has none). `noise` is a std or a `(low, high)` range drawn per image
    (`noise_power` as in `Degradation`);
    `gray_prob` (channels=3, unpaired sources only) makes that fraction of the crops gray;
    `shake_prob` and `quantize` are those of `Degradation`; `contrast_min` < 1 scales each
    (unpaired) crop's contrast by U[contrast_min, 1] (`TrainTransform`). With `initial_kernels`, batches also
    carry "h0" `[B, k, k]`, `kernels.perturb` of each "kernel" (a paired source needs kernels/), or
    with `kernel_bank` (an `unroll.classical.bank.KernelBank`, unpaired sources) kernel and h0
    drawn from the bank.
    Pipeline: the source sliced `process_index::process_count` (disjoint shards), shuffled with a
    fresh order each epoch, repeated forever, randomly cropped / flipped / rotated and degraded per
    element (grain seeds each element from `seed` and its index, so batches do not depend on
    threads or workers), batched. `iter(ds)` gives a grain DatasetIterator with `get_state()` /
    `set_state()`. `num_workers > 0` adds grain multiprocessing (grain reads its own absl flags
    then: run inside an absl app, as the entry points do, or call `absl.flags.FLAGS.mark_as_parsed()`
    first); `num_threads` / `prefetch` (in batches) configure grain's reader threads.
    """
    if patch_size < 1 or batch_size < 1:
        raise ValueError(f"patch_size and batch_size must be positive, got {patch_size}, {batch_size}")
    if kernel_size > patch_size:
        raise ValueError(f"kernel_size {kernel_size} is larger than patch_size {patch_size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    process_index, process_count = _process_defaults(process_index, process_count)
    if batch_size % process_count:
        raise ValueError(f"global batch_size {batch_size} is not divisible by process_count "
                         f"{process_count}")
    if not 0 <= gray_prob <= 1:
        raise ValueError(f"gray_prob must be in [0, 1], got {gray_prob}")
    if not 0 < contrast_min <= 1:
        raise ValueError(f"contrast_min must be in (0, 1], got {contrast_min}")
    if gray_prob > 0 and channels != 3:
        raise ValueError(f"gray_prob needs channels=3 (RGB), got channels={channels}")
    noise = tuple(noise) if isinstance(noise, (tuple, list)) else noise
    degradation = Degradation(kernel_size, tuple(sigma_range), noise, motion_prob, shake_prob,
                              bool(quantize), float(noise_power))
    source = open_source(source_or_dir, channels=channels, split="train", skip_bad=skip_bad)
    source = _drop_small(source, patch_size, skip_bad, "patch size")
    paired = _is_paired(source)
    if paired and (gray_prob > 0 or contrast_min < 1):  # given pairs: refuse rather than ignore it
        raise DataError(f"gray_prob and contrast_min apply to synthesised blur, but {source.root} "
                        "holds blur/ and sharp/ pairs")
    if paired and initial_kernels and not source.has_kernels:
        raise DataError(f"initial_kernels perturbs the true kernels, but {source.root} has no "
                        "kernels/ folder")
    if paired and source.has_kernels and len({e.kernel.shape for e in source._entries}) > 1:
        raise DataError(f"kernels in {source.root / 'kernels'} have different shapes; "
                        "batches need one shape")

    import grain  # imported here: decoding, sources and evaluation sets do not need it

    ds = grain.MapDataset.source(source).slice(slice(process_index, None, process_count))
    if len(ds) == 0:
        raise DataError(f"process {process_index} of {process_count} gets no images from "
                        f"{source.root} ({len(source)} images)")
    ds = ds.shuffle(seed=_derive_seed(seed, 0)).repeat(None)  # shuffle reseeds every epoch
    if kernel_bank is not None and kernel_bank.kernel_size != kernel_size:
        raise ValueError(f"the kernel bank holds {kernel_bank.kernel_size} px kernels, not {kernel_size}")
    if kernel_bank is not None and paired:
        raise DataError(f"a kernel bank blurs sharp images, but {source.root} holds blur/ and sharp/ pairs")
    transform = TrainTransform(patch_size, degradation, paired, float(gray_prob), bool(initial_kernels),
                               kernel_bank, float(contrast_min))
    ds = ds.random_map(transform, seed=_derive_seed(seed, 1, process_index))
    ds = ds.batch(batch_size // process_count, drop_remainder=True)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                              prefetch_buffer_size=prefetch))
    if num_workers > 0:
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return it


