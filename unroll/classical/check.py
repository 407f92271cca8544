"""Is a blind restoration worse than its input? A check that needs no ground truth.

A failed kernel estimate shows in two ways (measured below), each cheap to compute from (g, u, h):
  * `range_ratio`: the spread of the restored image (its 99.5th minus 0.5th percentile) over that of
    the input, both on the interior (a kernel half-size in from the frame). Deblurring restores some
    contrast (runs not worse than their input: 1.02-1.88 for 95 %, median 1.21); a wrong kernel
    rings, overshooting beyond the input's range (median 3.1 among failures).
  * `kernel_spread`: the kernel's RMS radius about its centre of mass over its window size. Failed
    estimates fill their window with a diffuse blob (median 0.36 among failures, 0.18 otherwise).
The check fails when range_ratio > 1.4 or kernel_spread > 0.2; `Verdict.score` is
max(range_ratio / 1.4, kernel_spread / 0.2) - 1, so it fails where score > 0. A kernel that fills
its window fails by design: give the solver a window larger than the blur.

Calibration (synthetic data only; `python -m experiments.never_worse --mode=calibrate` builds the
same set): 96 random 256x256 crops of RSSCN7 *train* scenes, 30 % RGB, blurred (symmetric boundary)
by an `unroll.kernels.motion` kernel of random odd size 15-31 and random extent (80 %) or a Gaussian
of sigma U[1, 4] (20 %), noise std U[0, 0.01], 8-bit quantised; each deblurred by
`unroll.classical.blind_deconvolve` at kernel sizes 15, 21, 27 and 31 (384 runs). A failure is a run
more than 0.5 dB below its input (aligned PSNR of the luminance): 181 of 384 runs (55 of 96 at size
27). The thresholds are round values that catch every failure: among failures with a compact kernel
the lowest range ratio was 1.50, among those with range ratio <= 1.4 the least spread kernel 0.206
(a thin margin). Rates on this set: false negatives 0 of 181 failures; false positives 104 of 203
other runs (51 %; 49 of 72 at size 15, where a blur larger than the window looks like a diffuse
kernel, 16 of 41 at size 27). The fallback of `unroll.classical.never_worse` (size 27, then 19,
then 13, then the input) simulated on these runs with sizes 27, 21, 15: mean gain over the input
from -4.16 dB (plain, size 27; worst -17.6 dB, 55 of 96 images more than 0.5 dB below) to +1.02 dB,
none below the input; 25 images kept size 27, 3 the first retry, 1 the second, 67 the input.

Camera shake at the published protocol (the solver given the blur's own size, as on Levin et al.'s
benchmark), `python -m experiments.never_worse --mode=calibrate --generator=shake
--blur_sizes=13,27 --kernel_sizes=true,true*1.5,true*0.7,true*0.5 --gaussian_share=0 --scenes=64
--seed=11`: 64 train crops blurred by `unroll.kernels.shake`, 256 runs, 93 of them more than
0.5 dB below the input, none of those passing (false positives 74 %: a kernel as large as its
window fails by its spread). Hence the fallback's first retry is a window 1.5x as large
(`unroll.classical.l0.fallback_sizes`): simulated on these runs, the mean gain over the input goes
from +0.19 dB (plain) and +0.69 dB (retrying 0.7x and 0.5x only) to +1.27 dB, still none below
the input. A spread bound of 0.25 would give +1.78 dB here, but on the motion set above (`--mode=calibrate
--kernel_sizes=27,21,15`) it lets failures of -1.3 to -1.6 dB through and 2 images would end
below their input (mean +1.23 dB against +1.03, worst -1.40); it stays 0.2.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from unroll.classical.layout import as_batch, luminance
from unroll.verdict import MAX_KERNEL_SPREAD, MAX_RANGE_RATIO


def range_ratio(g: np.ndarray, u: np.ndarray, k: int) -> float:
    """Spread (99.5th - 0.5th percentile) of u over that of g, [H, W] each, k // 2 px in from the frame."""
    r = k // 2
    H, W = g.shape
    gi, ui = g[r:H - r, r:W - r], u[r:H - r, r:W - r]
    lo_u, hi_u = np.percentile(ui, [0.5, 99.5])
    lo_g, hi_g = np.percentile(gi, [0.5, 99.5])
    return float((hi_u - lo_u) / max(hi_g - lo_g, 1e-3))


def kernel_spread(h: np.ndarray) -> float:
    """RMS radius of a [k, k] kernel (nonnegative, sum 1) about its centre of mass, over k."""
    h = np.asarray(h, np.float64)
    k = h.shape[0]
    yy, xx = np.mgrid[:k, :k]
    mass = max(h.sum(), 1e-12)
    cy, cx = np.sum(h * yy) / mass, np.sum(h * xx) / mass
    return float(np.sqrt(np.sum(h * ((yy - cy) ** 2 + (xx - cx) ** 2)) / mass) / k)


@dataclasses.dataclass(frozen=True)
class Verdict:
    ok: np.ndarray  # bool [N]: the restoration passes (is taken not to be worse than its input)
    score: np.ndarray  # float [N]: the failure score; the check fails where it is above 0
    features: dict  # "range_ratio", "kernel_spread" -> float [N]


def check_restoration(g, u, h, *, layout: str | None = None) -> Verdict:
    """Is a restoration u of g (with its kernel h) worse than g? No ground truth needed (see the
    module docstring for the features, thresholds and their calibration).

    g, u: the same form, any of `unroll.classical.blind_deconvolve`'s ([H, W], [N, H, W], [H, W, C],
    [N, H, W, C]; `layout` as there; colour images are judged by their luminance); h: [k, k] or
    [N, k, k]. Returns a `Verdict` with one entry per image (a batch of one for a single image).

    >>> import numpy as np
    >>> from unroll import kernels
    >>> g = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    >>> check_restoration(g, g, kernels.delta(9)).ok  # the input itself passes
    array([ True])
    >>> check_restoration(g, 3 * g, kernels.delta(9)).ok  # three times its range fails
    array([False])
    """
    g4, layout = as_batch(g, layout)
    u4, _ = as_batch(u, layout)
    h3 = np.asarray(h, np.float32)
    h3 = h3[None] if h3.ndim == 2 else h3
    if u4.shape != g4.shape:
        raise ValueError(f"u {tuple(u4.shape)} and g {tuple(g4.shape)} differ in shape")
    if h3.ndim != 3 or h3.shape[0] != g4.shape[0] or h3.shape[1] != h3.shape[2] or h3.shape[1] % 2 == 0:
        raise ValueError(f"h must be [k, k] or [N, k, k] with N = {g4.shape[0]} and k odd, got "
                         f"{h3.shape}")
    if 2 * h3.shape[1] > min(g4.shape[1:3]):
        raise ValueError(f"kernel {h3.shape[1:]} is too large for a {tuple(g4.shape[1:3])} image")
    gray_g, gray_u = np.asarray(luminance(g4)), np.asarray(luminance(u4))
    k = h3.shape[1]
    feats = {"range_ratio": np.array([range_ratio(a, b, k) for a, b in zip(gray_g, gray_u)]),
             "kernel_spread": np.array([kernel_spread(x) for x in h3])}
    score = np.maximum(feats["range_ratio"] / MAX_RANGE_RATIO,
                       feats["kernel_spread"] / MAX_KERNEL_SPREAD) - 1
    return Verdict(ok=score <= 0, score=score, features=feats)
