"""A bank of the classical estimator's real mistakes, for training a warm-started MGSTNet.

A warm-started network (`Config.kernel_init="classical"`) meets at inference the kernel that
`unroll.classical.estimate_kernel` finds, errors and failures included. Running the estimator on every
training crop would cost more than the train step (about 0.7 s per 256 px crop on this project's
2-core CPU), and hand-made perturbations of the true kernel (`kernels.perturb`) err unlike it: on the
21-scene pilot set of `experiments/flags/camera_shake.flags`, `unroll.nonblind` from the perturbed
kernels scored 19.4 dB on average, from the estimator's own kernels 25.6 dB (true kernels 31.0).

So the estimator runs once, on `count` crops of the training images blurred by the training blur mix,
and the pairs (true kernel, estimate) are kept. Training then draws a pair, blurs its crop with the
true kernel, and starts the network from the estimate: the estimate comes from another image, but it
errs as the estimator errs for that kernel (size, shape, failure on weak texture). Each draw applies
one of the 8 flips / quarter turns to both kernels, so the bank gives 8x as many pairs.

`build` saves its progress every `chunk` pairs and takes up where it stopped when run again (a bank
of 1024 pairs of 256 px crops takes about 12 minutes here).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from unroll import atomic

CROP = 256  # crops of about the size the estimator meets at evaluation (256 px crops, Levin's 255)
CHUNK = 64


@dataclasses.dataclass(frozen=True)
class KernelBank:
    """Pairs of a true kernel and the classical estimate of it, `[M, k, k]` each."""

    kernels: np.ndarray
    estimates: np.ndarray

    def __post_init__(self):
        if self.kernels.shape != self.estimates.shape or self.kernels.ndim != 3 or not len(self.kernels):
            raise ValueError(f"a bank needs kernels and estimates of one shape [M, k, k], M >= 1; got "
                             f"{self.kernels.shape} and {self.estimates.shape}")

    @property
    def kernel_size(self) -> int:
        return int(self.kernels.shape[-1])

    def __len__(self) -> int:
        return len(self.kernels)

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(true kernel, estimate), one random pair under one random flip / quarter turn of both.

        >>> bank = KernelBank(np.eye(3, dtype=np.float32)[None] / 3, np.full((1, 3, 3), 1 / 9, np.float32))
        >>> h, h0 = bank.draw(np.random.default_rng(0))
        >>> h.shape, float(h.sum()), float(h0.sum())
        ((3, 3), 1.0, 1.0)
        """
        i = int(rng.integers(len(self)))
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        out = []
        for h in (self.kernels[i], self.estimates[i]):
            h = np.rot90(h, turns)
            out.append(np.ascontiguousarray(h[:, ::-1] if flip else h, np.float32))
        return out[0], out[1]

    def save(self, path):
        with atomic.writing(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, kernels=self.kernels, estimates=self.estimates)

    @classmethod
    def load(cls, path) -> KernelBank:
        with np.load(path) as z:
            return cls(np.asarray(z["kernels"], np.float32), np.asarray(z["estimates"], np.float32))


def _crops(source, degradation, count: int, crop: int, seed: int, start: int, tries: int = 100):
    """The blurred crops and true kernels of pairs `start` to `count - 1`: pair i from its own seed,
    so a bank built in several runs equals one built at once."""
    blurred, true = [], []
    for i in range(start, count):
        rng = np.random.default_rng([seed, i])
        for _ in range(tries):  # images smaller than the crop are passed over
            image = source[int(rng.integers(len(source)))]["image"]
            if min(image.shape[:2]) >= crop:
                break
        else:
            raise ValueError(f"found no training image of at least {crop} px a side for the kernel bank")
        top = int(rng.integers(0, image.shape[0] - crop + 1))
        left = int(rng.integers(0, image.shape[1] - crop + 1))
        g, h = degradation(np.asarray(image[top:top + crop, left:left + crop], np.float32), rng)
        blurred.append(g)
        true.append(h)
    return np.stack(blurred), np.stack(true).astype(np.float32)


def build(path, source, degradation, count: int, *, crop: int = CROP, seed: int = 0,
          chunk: int = CHUNK, progress=None) -> KernelBank:
    """The bank at `path` (an `.npz`), made if missing: `count` training crops (`crop` px, from
    `source`'s images at least that large) degraded by `degradation`, each pair (its kernel, the
    estimator's kernel from its luminance). Progress is saved to `path` + `.partial.npz` every
    `chunk` pairs; a later call resumes from it. An existing complete bank is loaded, not rebuilt."""
    from unroll.classical.l0 import estimate_kernel  # jax, only when a bank is made

    path = Path(path)
    if path.exists():
        bank = KernelBank.load(path)
        if len(bank) != count or bank.kernel_size != degradation.kernel_size:
            raise ValueError(f"{path} holds {len(bank)} pairs of {bank.kernel_size} px kernels, not "
                             f"{count} of {degradation.kernel_size} px: remove it or give another path")
        return bank
    k = degradation.kernel_size
    if 2 * k > crop:
        raise ValueError(f"crop {crop} must be at least twice the kernel size {k}")
    partial = path.with_name(path.name + ".partial.npz")
    kernels_, estimates = np.zeros((0, k, k), np.float32), np.zeros((0, k, k), np.float32)
    if partial.exists():
        done = KernelBank.load(partial)
        kernels_, estimates = done.kernels[:count], done.estimates[:count]
    while len(kernels_) < count:
        stop = min(count, len(kernels_) + chunk)
        blurred, true = _crops(source, degradation, stop, crop, seed, len(kernels_))
        h0 = np.asarray(estimate_kernel(blurred, k, layout="NHWC"), np.float32)  # from the luminance
        # as `warm.initial_kernels`: an estimate that is no finite kernel becomes the uniform h_0
        ok = np.all(np.isfinite(h0), axis=(1, 2)) & (np.abs(h0.sum(axis=(1, 2)) - 1) < 1e-3)
        h0 = np.where(ok[:, None, None], h0, np.float32(1 / k ** 2))
        kernels_ = np.concatenate([kernels_, true])
        estimates = np.concatenate([estimates, h0])
        KernelBank(kernels_, estimates).save(partial)
        if progress is not None:
            progress(len(kernels_), count)
    bank = KernelBank(kernels_, estimates)
    bank.save(path)
    partial.unlink(missing_ok=True)
    return bank
