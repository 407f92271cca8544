"""The Levin et al. 2009 benchmark as the field scores it (SelfDeblur, Ren et al., CVPR 2020).

Protocol (`aligned_scores`), for one restored grayscale image `est` and its sharp truth, both
`[H, W]` in [0, 1]:
  * the truth is cropped by `crop` = 15 px per side (225x225 for Levin's 255x255 images);
  * the estimate is shifted by every (dy, dx) in {-5, -4.75, ..., 5}^2 with bilinear interpolation:
    the shifted estimate at crop pixel (y, x) is est sampled at (y + dy, x + dx); the shift with the
    least sum of squared differences (SSD) against the cropped truth is kept (the first in row-major
    order on ties);
  * PSNR = 10 log10(1 / MSE) and SSIM (11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03:
    `unroll.metrics.ssim`) on that aligned crop.
The 41 x 41 = 1681 shifts are scored exhaustively in one jitted function (`shift_ssd`, a
`lax.map` over dy of a `vmap` over dx), about 50 ms per image on a CPU core: exact, no
coarse-to-fine approximation.

Levin's error ratio (`error_ratio`): SSD of the image deconvolved with the estimated kernel over SSD
of the image deconvolved with the true kernel by the same non-blind method; success rates are the
share of images with ratio <= 2 (and <= 3).

Data (`load`): `sharp/im{1..4}.png`, `kernels/kernel{1..8}.npy`, `blurred/im{i}_kernel{j}.png`. The
blurred images are the *correlation* of the sharp image with the stored kernel up to a shift of a few
pixels (the data's README), so `LevinImage.kernel` is the stored kernel rotated by 180 degrees: a
true convolution kernel in this project's convention (`unroll.ops.blur`). `stored_kernel` keeps the
array as stored (what MNC is computed against; MNC is shift- but not rotation-invariant, so an
estimated *convolution* kernel is compared with `kernel`).

>>> import numpy as np
>>> from unroll import levin
>>> truth = np.random.default_rng(0).random((64, 64)).astype(np.float32)
>>> s = levin.aligned_scores(truth, truth, crop=8, max_shift=2)
>>> s.shift, round(s.ssim, 6)
((0.0, 0.0), 1.0)
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from unroll import metrics

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = "levin2009"  # the data set's name: found by `unroll.datasets.levin2009()`
CROP = 15
MAX_SHIFT = 5.0
SHIFT_STEP = 0.25


# ----------------------------------------------------------------------------------------------------
# Protocol.


def shift_grid(max_shift: float = MAX_SHIFT, step: float = SHIFT_STEP) -> np.ndarray:
    """The candidate shifts along one axis: -max_shift, ..., max_shift in steps of `step`."""
    n = int(round(max_shift / step))
    if n < 0 or abs(n * step - max_shift) > 1e-9:
        raise ValueError(f"max_shift {max_shift} must be a nonnegative multiple of step {step}")
    return np.arange(-n, n + 1) * step


def _bilinear_window(est, dy, dx, crop, out_hw):
    """est sampled at (crop + y + dy, crop + x + dx) for y, x in the window `out_hw` (bilinear)."""
    iy, ix = jnp.floor(dy), jnp.floor(dx)
    fy, fx = dy - iy, dx - ix
    y0 = (crop + iy).astype(jnp.int32)
    x0 = (crop + ix).astype(jnp.int32)
    h, w = out_hw
    win = lax.dynamic_slice(est, (y0, x0), (h + 1, w + 1))
    a, b = win[:h, :w], win[:h, 1:]
    c, d = win[1:, :w], win[1:, 1:]
    return (1 - fy) * ((1 - fx) * a + fx * b) + fy * ((1 - fx) * c + fx * d)


@functools.partial(jax.jit, static_argnames=("crop",))
def shift_ssd(est, truth_crop, shifts, crop: int):
    """SSD `[len(shifts), len(shifts)]` of the bilinearly shifted `est [H, W]` against `truth_crop`
    (the truth cropped by `crop` px per side), for every (dy, dx) in shifts x shifts."""
    out_hw = truth_crop.shape

    def row(dy):
        def one(dx):
            return jnp.sum((_bilinear_window(est, dy, dx, crop, out_hw) - truth_crop) ** 2)
        return jax.vmap(one)(shifts)

    return lax.map(row, shifts)


@functools.partial(jax.jit, static_argnames=("truth_shape", "crop"))
def _shift(est, dy, dx, truth_shape, crop: int):
    return _bilinear_window(est, dy, dx, crop, (truth_shape[0] - 2 * crop, truth_shape[1] - 2 * crop))


@dataclasses.dataclass(frozen=True)
class Scores:
    psnr: float
    ssim: float
    ssd: float  # on the aligned crop
    shift: tuple  # (dy, dx): est sampled at (y + dy, x + dx) matches the truth at (y, x)
    aligned: np.ndarray  # the aligned estimate on the crop, [H - 2 crop, W - 2 crop]


def _gray(x, name):
    x = np.asarray(x, np.float32)
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 2:
        raise ValueError(f"{name} must be a grayscale [H, W] or [H, W, 1] array, got shape {x.shape}")
    return x


def aligned_scores(est, truth, *, crop: int = CROP, max_shift: float = MAX_SHIFT,
                   step: float = SHIFT_STEP) -> Scores:
    """The SelfDeblur protocol: PSNR / SSIM of `est` against `truth` (both `[H, W]` in [0, 1]) on the
    truth cropped by `crop` px, after the best bilinear shift of `est` in {-max_shift, ..., max_shift}^2
    (steps of `step`) by least SSD. `est` is scored as given (clip it to [0, 1] first if needed)."""
    est, truth = _gray(est, "est"), _gray(truth, "truth")
    if est.shape != truth.shape:
        raise ValueError(f"est {est.shape} and truth {truth.shape} differ in shape")
    if crop < max_shift + 1:
        raise ValueError(f"crop ({crop}) must exceed max_shift ({max_shift}) by at least 1 px")
    if min(truth.shape) <= 2 * crop:
        raise ValueError(f"crop {crop} leaves nothing of a {truth.shape} image")
    shifts = shift_grid(max_shift, step)
    H, W = truth.shape
    truth_crop = truth[crop:H - crop, crop:W - crop]
    ssd = np.asarray(shift_ssd(jnp.asarray(est), jnp.asarray(truth_crop),
                               jnp.asarray(shifts, jnp.float32), crop))
    i, j = np.unravel_index(int(np.argmin(ssd)), ssd.shape)
    dy, dx = float(shifts[i]), float(shifts[j])
    aligned = np.asarray(_shift(jnp.asarray(est), dy, dx, tuple(truth.shape), crop))
    mse = float(np.mean((aligned.astype(np.float64) - truth_crop) ** 2))
    psnr = float(10 * np.log10(1.0 / mse)) if mse > 0 else float("inf")
    ssim = float(metrics.ssim(aligned[None, ..., None], truth_crop[None, ..., None])[0])
    return Scores(psnr, ssim, float(mse * aligned.size), (dy, dx), aligned)


def error_ratio(ssd_estimated_kernel: float, ssd_true_kernel: float) -> float:
    """Levin et al.'s error ratio: SSD of the result deconvolved with the estimated kernel over SSD of
    the result deconvolved with the true kernel (same non-blind method, same alignment)."""
    if not ssd_true_kernel > 0:
        raise ValueError(f"the true-kernel SSD must be positive, got {ssd_true_kernel}")
    return float(ssd_estimated_kernel) / float(ssd_true_kernel)


def success_rate(ratios, threshold: float) -> float:
    """Share of images whose error ratio is at most `threshold` (NaN ratios count as failures)."""
    r = np.asarray(ratios, np.float64)
    return float(np.mean(np.nan_to_num(r, nan=np.inf) <= threshold)) if r.size else float("nan")


# ----------------------------------------------------------------------------------------------------
# Data.


@dataclasses.dataclass(frozen=True)
class LevinImage:
    name: str  # "im{i}_kernel{j}"
    image: int  # i in 1..4
    kernel_index: int  # j in 1..8
    blurred: np.ndarray  # [255, 255] float32 in [0, 1]
    sharp: np.ndarray  # [255, 255] float32 in [0, 1]
    kernel: np.ndarray  # the convolution kernel: stored kernel rotated by 180 degrees, float32
    stored_kernel: np.ndarray  # the kernel as stored (float64)


NAMES = tuple(f"im{i}_kernel{j}" for i in range(1, 5) for j in range(1, 9))


def resolve_dir(path: str | Path | None = None) -> Path:
    """The data folder: `path` as given (user-expanded; relative paths against the current folder),
    except the default (None or `DEFAULT_DIR`), the prepared data set (`unroll.datasets.levin2009`,
    which raises a one-line `DatasetNotFoundError` saying how to get it)."""
    if path is None or str(path) == DEFAULT_DIR:
        from unroll import datasets

        return datasets.levin2009().resolve()
    return Path(path).expanduser().resolve()


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im)
    if a.ndim == 3:  # a gray image saved as RGB(A): take the mean of the colour channels
        a = a[..., :3].mean(axis=-1)
    scale = 65535.0 if a.dtype == np.uint16 else 255.0
    return (a.astype(np.float64) / scale).astype(np.float32)


def load(path: str | Path | None = None, names=None) -> list[LevinImage]:
    """The Levin images (all 32, or those in `names`, e.g. ["im1_kernel4"]), in the order of `NAMES`.

    Raises FileNotFoundError naming the missing file or folder, ValueError for unknown names."""
    root = resolve_dir(path)
    for sub in ("sharp", "kernels", "blurred"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"Levin data folder {root} has no {sub}/ (expected sharp/, "
                                    "kernels/, blurred/)")
    if names:
        unknown = sorted(set(names) - set(NAMES))
        if unknown:
            raise ValueError(f"unknown Levin images {unknown}; names look like im1_kernel4 "
                             "(images 1-4, kernels 1-8)")
    wanted = [n for n in NAMES if not names or n in set(names)]
    out, cache = [], {}
    for name in wanted:
        i, j = int(name[2]), int(name.split("kernel")[1])
        files = {"blurred": root / "blurred" / f"{name}.png", "sharp": root / "sharp" / f"im{i}.png",
                 "kernel": root / "kernels" / f"kernel{j}.npy"}
        for f in files.values():
            if not f.is_file():
                raise FileNotFoundError(f"Levin file {f} is missing")
        if files["sharp"] not in cache:
            cache[files["sharp"]] = _read_png(files["sharp"])
        stored = np.load(files["kernel"]).astype(np.float64)
        if stored.ndim != 2 or stored.shape[0] % 2 == 0 or stored.shape[1] % 2 == 0:
            raise ValueError(f"{files['kernel']} is not an odd-sized 2-D kernel (shape {stored.shape})")
        kernel = stored[::-1, ::-1] / stored.sum()
        out.append(LevinImage(name, i, j, _read_png(files["blurred"]), cache[files["sharp"]],
                              np.ascontiguousarray(kernel, np.float32), stored))
    return out
