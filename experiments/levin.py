"""Levin et al. 2009 scored the way the field scores it (SelfDeblur's protocol, `unroll.levin`).

    python -m experiments.levin --method=input --workdir=runs/levin
    python -m experiments.levin --method=known_kernel --workdir=runs/levin
    python -m experiments.levin --method=classical --workdir=runs/levin
    python -m experiments.levin --method=classical_fallback --workdir=runs/levin
    python -m experiments.levin --method=checkpoint:runs/motion --workdir=runs/levin
    python -m experiments.levin --method=checkpoint:motion --workdir=runs/levin   # the shipped model

Methods:
  * `input`: the blurred image itself (no kernel).
  * `known_kernel`: the non-blind step (`unroll.nonblind.deconvolve`) with the true kernel: the ceiling
    of every method whose last step it is.
  * `classical`: the classical blind solver (`unroll.classical.blind_deconvolve`), given the kernel
    size (`--kernel_size=0`: the true kernel's size, as the published methods are; otherwise one size
    for every image), then the same non-blind step with its kernel.
  * `classical_fallback`: the same with its "never worse" fallback (`blind_deconvolve(...,
    fallback=True)`: a restoration that `classical.check_restoration` flags is redone at smaller
    kernel sizes, and in the end the blurred input is returned).
  * `checkpoint:DIR`: a trained network (`unroll.load(DIR)`; DIR may be a shipped model's name, e.g.
    `checkpoint:motion`), gray or RGB (the gray image is repeated over the channels and the output
    averaged back).

Writes, for method M (the folder name is M, with `checkpoint:DIR` as `checkpoint_<name of DIR>`):
  OUT/M/restored/im{i}_kernel{j}.npy          restored image, float32 [255, 255] in [0, 1], not quantised
  OUT/M/restored/im{i}_kernel{j}_kernel.npy   estimated convolution kernel (when the method has one)
  OUT/M/per_image.csv                         PSNR, SSIM, error ratio, shift, kernel MNC, seconds
  OUT/M/summary.json                          means, success rates, configuration (marks M finished)
  OUT/levin.md                                every finished method next to the published rows
Rerunning reuses a finished method whose configuration is unchanged (`--force` recomputes it).
Every file is written atomically (`unroll.atomic`); a file of an earlier run that cannot be read
(cut short by a kill in an older version, damaged) is unfinished work: redone, with a note.

Error ratio (Levin et al. 2009): SSD after alignment of `nonblind.deconvolve(blurred, estimated
kernel)` over that of `nonblind.deconvolve(blurred, true kernel)`; NaN for methods without a kernel.

Measured (all 32 images; seconds on a shared 2-core CPU, compilation included):
  input          23.25 dB / SSIM 0.699
  known_kernel   34.56 dB / 0.951  (published known-kernel row: 34.53 / 0.949)        0.55 s/image
  classical      32.69 dB / 0.934, error ratio <= 2: 81 %, <= 3: 91 %, kernel MNC 0.844   5.4 s/image
                 (0.95 s/image warm in a batch of 4; about 25 s of compilation per kernel size)
"""

from __future__ import annotations

import math
import re
import sys
import time
from pathlib import Path

from absl import app, flags

from experiments.common import UsageError, run_reporting_user_errors
from unroll import atomic, hostmem

DEFAULT_LEVIN = "levin2009"

flags.DEFINE_string("method", None, "input, known_kernel, classical, classical_fallback or checkpoint:DIR")
flags.DEFINE_string("workdir", None, "output folder (created)")
flags.DEFINE_string("levin_dir", DEFAULT_LEVIN, "Levin 2009 data (sharp/, kernels/, blurred/); the "
                    "default, the data set's name, is found by unroll.datasets (UNROLL_DATA)")
flags.DEFINE_list("images", [], "a subset, e.g. im1_kernel1,im3_kernel5 (default: all 32)")
flags.DEFINE_integer("kernel_size", 0, "classical: estimated kernel size (odd); 0 = the true size")
flags.DEFINE_string("checkpoint", "best", "checkpoint:DIR: which checkpoint (best or latest)")
flags.DEFINE_bool("force", False, "recompute the method even if it is finished")
FLAGS = flags.FLAGS

# Mean PSNR / SSIM over the 32 Levin images, with where they were published: the classical methods
# and the known kernel from SelfDeblur (Ren et al., CVPR 2020), Table 1; the feed-forward networks
# (which postdate it) from later evaluations on the same protocol.
SELFDEBLUR = "published: SelfDeblur (Ren et al. 2020), Table 1"
LATER = "published: later evaluations of feed-forward networks, same protocol"
PUBLISHED = [
    ("Known kernel", 34.53, 0.949, SELFDEBLUR), ("Krishnan et al. 2011", 29.88, 0.866, SELFDEBLUR),
    ("Cho and Lee 2009", 30.57, 0.896, SELFDEBLUR), ("Levin et al. 2011", 30.80, 0.909, SELFDEBLUR),
    ("Xu and Jia 2010", 31.67, 0.916, SELFDEBLUR), ("Zuo et al. 2016", 32.66, 0.933, SELFDEBLUR),
    ("Pan et al. 2016 (dark channel)", 32.69, 0.928, SELFDEBLUR),
    ("Sun et al. 2013", 32.99, 0.933, SELFDEBLUR), ("SelfDeblur", 33.07, 0.931, SELFDEBLUR),
    ("MPRNet", 26.21, 0.795, LATER), ("Restormer", 27.78, 0.838, LATER),
]
COLUMNS = ("name", "psnr", "ssim", "error_ratio", "shift_y", "shift_x", "kernel_mnc", "seconds")


def method_folder(method: str) -> str:
    if method.startswith("checkpoint:"):
        name = Path(method.split(":", 1)[1].rstrip("/")).name or "root"
        return "checkpoint_" + re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return method


def _check_method(method):
    if not method:
        raise UsageError("give --method=input|known_kernel|classical|classical_fallback|checkpoint:DIR")
    if method in ("input", "known_kernel", "classical", "classical_fallback"):
        return
    if method.startswith("checkpoint:"):
        from unroll import pretrained

        d = Path(method.split(":", 1)[1]).expanduser()
        if str(d) in pretrained.NAMES and not d.is_dir():  # a shipped model, as unroll.load reads it
            return
        if not str(d) or not d.is_dir():
            raise UsageError(f"--method={method}: {d} is not a folder (nor a shipped model: "
                             f"{', '.join(pretrained.NAMES)})")
        return
    raise UsageError(f"unknown --method={method!r} (input, known_kernel, classical, classical_fallback "
                     "or checkpoint:DIR)")


# ----------------------------------------------------------------------------------------------------
# Methods: each returns [(restored [H, W], kernel [k, k] or None, seconds)] for the images.


def run_input(images):
    return [(im.blurred, None, 0.0) for im in images]


def run_known_kernel(images):
    import numpy as np

    from unroll import nonblind

    out = []
    for im in images:
        t0 = time.time()
        u = np.asarray(nonblind.deconvolve(im.blurred, im.kernel))
        out.append((u, im.kernel, time.time() - t0))
    return out


def run_classical(images, kernel_size, fallback: bool = False):
    import numpy as np

    from unroll import classical

    groups = {}
    for n, im in enumerate(images):
        k = kernel_size or im.kernel.shape[0]
        groups.setdefault(k, []).append(n)
    out = [None] * len(images)
    for k, idx in groups.items():  # one batch (and one compilation) per kernel size
        g = np.stack([images[n].blurred for n in idx])
        t0 = time.time()
        u, h = classical.blind_deconvolve(g, k, fallback=fallback, layout="NHW")
        u, h = np.asarray(u), np.asarray(h)
        seconds = (time.time() - t0) / len(idx)
        for m, n in enumerate(idx):
            out[n] = (u[m], h[m], seconds)
    return out


def run_checkpoint(images, directory, checkpoint):
    import numpy as np

    import unroll

    model = unroll.load(directory, checkpoint=checkpoint)
    channels = int(getattr(model.config, "channels", 1))
    out = []
    for im in images:
        x = im.blurred[..., None] if channels == 1 else np.repeat(im.blurred[..., None], channels, -1)
        t0 = time.time()
        u, h = model.deblur(x)
        u = np.asarray(u, np.float32)
        u = u.mean(axis=-1) if u.ndim == 3 else u
        out.append((u, None if h is None else np.asarray(h, np.float32), time.time() - t0))
    return out


# ----------------------------------------------------------------------------------------------------
# Scoring and reports.


def reference_ssd(images, cache: Path):
    """Aligned SSD of the true-kernel non-blind result per image (the error ratio's denominator)."""
    import numpy as np

    from unroll import levin, nonblind

    known = atomic.read_json(cache, "computing it again")
    if not isinstance(known, dict) or not all(isinstance(v, (int, float)) for v in known.values()):
        known = {}
    missing = [im for im in images if im.name not in known]
    for im in missing:
        u = np.clip(np.asarray(nonblind.deconvolve(im.blurred, im.kernel)), 0, 1)
        known[im.name] = levin.aligned_scores(u, im.sharp).ssd
    if missing or not cache.is_file():
        atomic.write_json(cache, known)
    return known


def score(images, results, ref_ssd, method):
    import jax.numpy as jnp
    import numpy as np

    from unroll import levin, metrics, nonblind

    rows = []
    for im, (u, h, seconds) in zip(images, results):
        s = levin.aligned_scores(u, im.sharp)
        if h is None:
            ratio, mnc = float("nan"), float("nan")
        else:
            if method in ("known_kernel", "classical", "classical_fallback"):  # the non-blind result
                ssd = s.ssd
            else:
                ssd = levin.aligned_scores(
                    np.clip(np.asarray(nonblind.deconvolve(im.blurred, h)), 0, 1), im.sharp).ssd
            ratio = levin.error_ratio(ssd, ref_ssd[im.name])
            mnc = float(metrics.mnc(jnp.asarray(h), jnp.asarray(im.kernel))[0])
        rows.append({"name": im.name, "psnr": s.psnr, "ssim": s.ssim, "error_ratio": ratio,
                     "shift_y": s.shift[0], "shift_x": s.shift[1], "kernel_mnc": mnc,
                     "seconds": seconds})
    return rows


def summarise(rows, config):
    import numpy as np

    from unroll import levin

    def mean(key):
        v = np.array([r[key] for r in rows], np.float64)
        return float(np.mean(v)) if not np.all(np.isnan(v)) else float("nan")

    ratios = [r["error_ratio"] for r in rows]
    has_kernel = not all(math.isnan(r) for r in ratios)
    return {"images": len(rows), "psnr": mean("psnr"), "ssim": mean("ssim"),
            "kernel_mnc": mean("kernel_mnc"), "error_ratio_mean": mean("error_ratio"),
            "success_2": levin.success_rate(ratios, 2) if has_kernel else float("nan"),
            "success_3": levin.success_rate(ratios, 3) if has_kernel else float("nan"),
            "seconds_per_image": mean("seconds"), "config": config}


def _fmt(x, spec):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def markdown(workdir: Path) -> str:
    ours = []
    for f in sorted(workdir.glob("*/summary.json")):
        s = _summary(f, "left out of the table until that method is run again")
        if s is None:
            continue
        label = s["config"]["method"] + ("" if s["images"] == 32 else f" ({s['images']} images)")
        ours.append((label, s["psnr"], s["ssim"], s["success_2"], s["success_3"],
                     s["seconds_per_image"], "ours (this run)"))
    rows = ours + [(n, p, q, None, None, None, source) for n, p, q, source in PUBLISHED]
    rows.sort(key=lambda r: -r[1])
    lines = ["# Levin et al. 2009, 32 images (SelfDeblur protocol)", "",
             "| method | PSNR (dB) | SSIM | success ER<=2 | success ER<=3 | s / image | source |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, p, q, s2, s3, sec, src in rows:
        lines.append(f"| {name} | {p:.2f} | {q:.3f} | {_fmt(s2 and 100 * s2, '.0f')}"
                     f"{'' if s2 is None or math.isnan(s2) else ' %'} | {_fmt(s3 and 100 * s3, '.0f')}"
                     f"{'' if s3 is None or math.isnan(s3) else ' %'} | {_fmt(sec, '.2f')} | {src} |")
    lines += ["", "Protocol (`unroll.levin.aligned_scores`): ground truth cropped 15 px per side; the "
              "estimate shifted by every (dy, dx) in {-5, -4.75, ..., 5}^2 (bilinear), least SSD kept; "
              "PSNR = 10 log10(1/MSE), SSIM 11x11 Gaussian (sigma 1.5). Error ratio: aligned SSD of the "
              "non-blind result with the estimated kernel over that with the true kernel "
              "(`unroll.nonblind.deconvolve`); success = share of images with ratio <= 2 (<= 3). "
              "Published rows: means as printed by their sources (each method's own non-blind step)."]
    return "\n".join(lines) + "\n"


def run(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {' '.join(argv[1:])!r} (flags look like --name=value)")
    method = FLAGS.method
    _check_method(method)
    if not FLAGS.workdir:
        raise UsageError("give --workdir=DIR (the output folder)")
    if FLAGS.kernel_size and (FLAGS.kernel_size < 3 or FLAGS.kernel_size % 2 == 0):
        raise UsageError(f"--kernel_size must be 0 or an odd integer >= 3, got {FLAGS.kernel_size}")

    from unroll import levin

    try:
        images = levin.load(FLAGS.levin_dir, FLAGS.images or None)
    except ValueError as exc:
        raise UsageError(f"--images: {exc}") from exc
    workdir = Path(FLAGS.workdir).expanduser()
    if workdir.exists() and not workdir.is_dir():
        raise UsageError(f"--workdir={workdir} exists and is not a folder")
    out = workdir / method_folder(method)
    config = {"method": method, "images": [im.name for im in images],
              "levin_dir": str(levin.resolve_dir(FLAGS.levin_dir))}
    if method in ("classical", "classical_fallback"):
        config["kernel_size"] = FLAGS.kernel_size
    if method.startswith("checkpoint:"):
        config["checkpoint"] = FLAGS.checkpoint
    summary_file = out / "summary.json"
    if not FLAGS.force:
        old = _summary(summary_file, f"running {method} again")
        if old is not None and old.get("config") == config:
            print(f"{method}: finished earlier in {out}, reused (--force recomputes it)")
            _report(workdir, old)
            return

    import numpy as np

    (out / "restored").mkdir(parents=True, exist_ok=True)
    summary_file.unlink(missing_ok=True)
    if method == "input":
        results = run_input(images)
    elif method == "known_kernel":
        results = run_known_kernel(images)
    elif method in ("classical", "classical_fallback"):
        results = run_classical(images, FLAGS.kernel_size, fallback=method == "classical_fallback")
    else:
        results = run_checkpoint(images, method.split(":", 1)[1], FLAGS.checkpoint)
    results = [(np.clip(np.asarray(u, np.float32), 0, 1), h, t) for u, h, t in results]
    for im, (u, h, _) in zip(images, results):
        if u.shape != im.sharp.shape:
            raise UsageError(f"{method} returned a {u.shape} image for the {im.sharp.shape} {im.name}")
        _save_npy(out / "restored" / f"{im.name}.npy", u)
        if h is not None:
            _save_npy(out / "restored" / f"{im.name}_kernel.npy", np.asarray(h, np.float32))
    ref = reference_ssd(images, workdir / "reference_ssd.json")
    rows = score(images, results, ref, method)
    atomic.write_csv(out / "per_image.csv", rows, COLUMNS)
    summary = summarise(rows, config)
    atomic.write_json(summary_file, summary)  # last: it marks the method finished
    _report(workdir, summary)


def _save_npy(path: Path, array):
    import numpy as np

    with atomic.writing(path) as tmp:
        np.save(tmp, array)


def _summary(path: Path, redo: str):
    """A method's summary.json, or None when it is missing, unreadable or incomplete (noted)."""
    found = atomic.read_json(path, redo)
    needed = ("images", "psnr", "ssim", "success_2", "success_3", "seconds_per_image", "config")
    if found is None:
        return None
    if not isinstance(found, dict) or not all(k in found for k in needed) \
            or not isinstance(found["config"], dict):
        print(f"note: {path} is incomplete: unfinished work, {redo}", file=sys.stderr)
        return None
    return found


def _report(workdir: Path, summary):
    atomic.write_text(workdir / "levin.md", markdown(workdir))
    s = summary
    print(f"{s['config']['method']}: {s['images']} images  PSNR {s['psnr']:.2f} dB  SSIM {s['ssim']:.4f}  "
          f"success (ER<=2) {_fmt(s['success_2'] * 100, '.0f')} %  (ER<=3) "
          f"{_fmt(s['success_3'] * 100, '.0f')} %  kernel MNC {_fmt(s['kernel_mnc'], '.3f')}  "
          f"{s['seconds_per_image']:.2f} s/image")
    print(f"table: {workdir / 'levin.md'}")


def main(argv):
    run_reporting_user_errors(run, argv)


if __name__ == "__main__":
    hostmem.configure()  # reuse XLA:CPU's per-step buffers (unroll/hostmem.py)
    app.run(main)
