"""The classical unrolled blind-deconvolution solver (`unroll.classical`), untuned and tuned, on the
Levin et al. 2009 benchmark and on the built-in test samples.

    python -m experiments.classical --workdir=/tmp/classical
    python -m experiments.classical --workdir=/tmp/classical --levin_subset=im1_kernel1,im2_kernel4 \
        --tune_steps=10

1. Tuning: the per-iteration parameters (`default_params`) are fitted with Adam by jax.grad through
   the unrolled iterations on synthetic pairs: `--tune_pairs` grayscale `--tune_patch`^2 crops of
   the built-in *training* images, blurred with random camera-shake (75 %) or Gaussian kernels of
   size `--kernel_size` plus noise of std `--noise`.
2. Levin (`--levin_dir`; the default, the data set's name `levin2009`, is found by `unroll.datasets`,
   under $UNROLL_DATA when set): each of the 32
   real blurred images (or `--levin_subset`) is deblurred with kernel size `--kernel_size` = 27 for
   every image (the largest of the eight kernels; the solver is not told the true size). The blurred
   images are the *correlation* of the sharp image with the stored kernel (README of the data), so
   the estimate is compared with the stored kernel rotated by 180 degrees, by MNC (shift-invariant).
   Images: PSNR / SSIM of the output clipped to [0, 1] after the best integer shift within
   +-`--max_shift` px, ignoring a `--border` px border; the blurred input is scored by the same
   protocol.
3. Built-in test samples (chelsea, coins, moon; grayscale, centre 255x255 crops): synthetic
   camera-shake blur of size `--kernel_size` with noise `--noise` (a fixed kernel per image), scored
   by the same protocol against the true kernel (no rotation: the blur is a true convolution).

The defaults (80 tuning steps, all 32 Levin images) take about 4 minutes on a 2-core CPU.
This studies the unrolled Haar/GST_p solver (`unroll.classical.solve`) with its own simple scores;
the benchmark with the field's protocol and the competitive L0 solver is `experiments.levin`.
Writes WORKDIR/classical.json (configuration, per-image and mean scores, tuning history, timings),
WORKDIR/classical.md (the table, also printed) and WORKDIR/tuned_params.npz.
"""

from __future__ import annotations

import time
from pathlib import Path

from absl import app, flags

from experiments.common import UsageError, run_reporting_user_errors
from unroll import atomic, hostmem

DEFAULT_LEVIN = "levin2009"

flags.DEFINE_string("workdir", None, "output folder (created)")
flags.DEFINE_string("levin_dir", DEFAULT_LEVIN, "Levin 2009 data (sharp/, kernels/, blurred/); the "
                    "default, the data set's name, is found by unroll.datasets (UNROLL_DATA)")
flags.DEFINE_list("levin_subset", [], "Levin images to use, e.g. im1_kernel1,im3_kernel5 (default: "
                  "all 32)")
flags.DEFINE_integer("iterations", 20, "blind iterations per scale")
flags.DEFINE_integer("scales", 3, "coarse-to-fine scales")
flags.DEFINE_integer("final_iterations", 20, "non-blind iterations with the final kernel")
flags.DEFINE_integer("kernel_size", 27, "estimated kernel size (odd), for every image")
flags.DEFINE_enum("threshold", "gst", ["gst", "soft"], "image shrinkage")
flags.DEFINE_integer("shifts", 4, "cycle-spinning shifts of the Haar prox (1-8)")
flags.DEFINE_integer("tune_steps", 80, "Adam steps of tuning (0: evaluate the defaults only)")
flags.DEFINE_float("tune_lr", 0.03, "Adam learning rate (the parameters are logs / logits)")
flags.DEFINE_integer("tune_pairs", 32, "synthetic training pairs")
flags.DEFINE_integer("tune_batch", 6, "training pairs per step")
flags.DEFINE_integer("tune_patch", 96, "training crop size")
flags.DEFINE_float("tune_kernel_weight", 0.0, "weight of the kernel data-consistency loss")
flags.DEFINE_float("noise", 0.01, "noise std of the synthetic blur (training and built-in test)")
flags.DEFINE_integer("eval_batch", 8, "images per solver call (fixed, so one compilation serves all)")
flags.DEFINE_integer("border", 20, "border ignored by the image scores, px")
flags.DEFINE_integer("max_shift", 8, "largest integer shift searched by the image scores, px")
flags.DEFINE_integer("seed", 0, "seed of the training pairs, the tuning batches and the test blur")
FLAGS = flags.FLAGS


# ----------------------------------------------------------------------------------------------------
# Scoring.


def shifted_scores(u, sharp, border: int, max_shift: int):
    """(PSNR, SSIM, (dy, dx)) of `u` [H, W, C] against `sharp` after the best integer shift of u
    within +-max_shift px (by PSNR), both cropped by `border` px (u clipped to [0, 1])."""
    import numpy as np

    from unroll import metrics

    u = np.clip(np.asarray(u, np.float64), 0.0, 1.0)
    sharp = np.asarray(sharp, np.float64)
    H, W = sharp.shape[:2]
    ref = sharp[border:H - border, border:W - border]
    best = (-np.inf, (0, 0))
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            crop = u[border + dy:H - border + dy, border + dx:W - border + dx]
            mse = np.mean((crop - ref) ** 2)
            psnr = 10 * np.log10(1.0 / max(mse, 1e-20))
            if psnr > best[0]:
                best = (psnr, (dy, dx))
    dy, dx = best[1]
    crop = u[border + dy:H - border + dy, border + dx:W - border + dx]
    ssim = float(metrics.ssim(crop[None].astype(np.float32), ref[None].astype(np.float32))[0])
    return float(best[0]), ssim, (dy, dx)


# ----------------------------------------------------------------------------------------------------
# Data.


def _levin_root() -> Path:
    from unroll import levin

    root = levin.resolve_dir(FLAGS.levin_dir)
    for sub in ("sharp", "kernels", "blurred"):
        if not (root / sub).is_dir():
            raise UsageError(f"Levin data folder {root} has no {sub}/ (give --levin_dir=FOLDER with "
                             "sharp/, kernels/ and blurred/)")
    return root


def load_levin(root: Path, subset):
    """[(name, blurred [H, W, 1], sharp [H, W, 1], true convolution kernel [k, k])]."""
    import numpy as np

    from unroll import data

    names = [f"im{i}_kernel{j}" for i in range(1, 5) for j in range(1, 9)]
    if subset:
        unknown = [s for s in subset if s not in names]
        if unknown:
            raise UsageError(f"unknown --levin_subset entries {unknown}; names look like im1_kernel4 "
                             "(images 1-4, kernels 1-8)")
        names = [n for n in names if n in set(subset)]
    out = []
    for name in names:
        i, j = name[2], name.split("kernel")[1]
        for path in (root / "blurred" / f"{name}.png", root / "sharp" / f"im{i}.png",
                     root / "kernels" / f"kernel{j}.npy"):
            if not path.is_file():
                raise UsageError(f"Levin file {path} is missing")
        try:
            kernel = np.load(root / "kernels" / f"kernel{j}.npy")
        except Exception as exc:  # noqa: BLE001 - any numpy reader failure is bad input
            raise UsageError(f"cannot read {root / 'kernels' / f'kernel{j}.npy'}: {exc}") from exc
        if kernel.ndim != 2:
            raise UsageError(f"kernel{j}.npy is not a 2-D array (shape {kernel.shape})")
        # Blurred = correlation with the stored kernel = convolution with it rotated by 180 degrees.
        kernel = np.ascontiguousarray(kernel[::-1, ::-1]).astype(np.float32)
        out.append((name, data.load_image(root / "blurred" / f"{name}.png", 1),
                    data.load_image(root / "sharp" / f"im{i}.png", 1), kernel))
    shapes = {b.shape for _, b, _, _ in out}
    if len(shapes) != 1:
        raise UsageError(f"Levin blurred images have different sizes {shapes}")
    return out


def load_builtin(kernel_size: int, noise: float, seed: int, crop: int = 255):
    from unroll import data

    ds = data.make_eval_dataset(None, kernel_size=kernel_size, noise=noise, motion_prob=1.0,
                                seed=seed, channels=1, center_crop=crop)
    return [(ex["name"], ex["blurred"], ex["sharp"], ex["kernel"]) for ex in ds]


# ----------------------------------------------------------------------------------------------------
# Evaluation.


def deblur_all(blurred, params, options, batch: int):
    """Run the solver over a list of equal-size images in fixed-size batches (the last padded by
    repeating its first image), so that every call reuses one compilation."""
    import jax.numpy as jnp
    import numpy as np

    from unroll import classical

    us, hs = [], []
    for start in range(0, len(blurred), batch):
        chunk = list(blurred[start:start + batch])
        real = len(chunk)
        chunk += [chunk[0]] * (batch - real)
        u, h = classical.solve(jnp.asarray(np.stack(chunk)), params, **options)
        us += list(np.asarray(u)[:real])
        hs += list(np.asarray(h)[:real])
    return us, hs


def evaluate(examples, params, options, batch: int, border: int, max_shift: int, input_scores=True):
    import jax.numpy as jnp

    from unroll import metrics

    t0 = time.time()
    us, hs = deblur_all([b for _, b, _, _ in examples], params, options, batch)
    seconds = time.time() - t0
    rows = []
    for (name, blurred, sharp, kernel), u, h in zip(examples, us, hs):
        psnr, ssim, shift = shifted_scores(u, sharp, border, max_shift)
        row = {"name": name, "psnr": psnr, "ssim": ssim, "shift": list(shift),
               "kernel_mnc": float(metrics.mnc(jnp.asarray(h), jnp.asarray(kernel))[0])}
        if input_scores:
            row["psnr_input"], row["ssim_input"], _ = shifted_scores(blurred, sharp, border, max_shift)
        rows.append(row)
    return rows, seconds


def _mean(rows, key):
    return sum(r[key] for r in rows) / len(rows)


def summary(rows):
    keys = ["psnr", "ssim", "kernel_mnc"] + [k for k in ("psnr_input", "ssim_input") if k in rows[0]]
    return {k: _mean(rows, k) for k in keys}


def markdown(results, config) -> str:
    lines = [f"# Classical unrolled solver ({config['scales']} scales x {config['iterations']} blind "
             f"+ {config['final_iterations']} non-blind iterations, kernel {config['kernel_size']}, "
             f"{config['threshold']}, {config['shifts']} shifts)", ""]
    for dataset, title in (("levin", "Levin et al. 2009 (real blur)"),
                           ("builtin", "Built-in test samples (synthetic camera shake)")):
        if dataset not in results:
            continue
        res = results[dataset]
        n = len(res["untuned"]["images"])
        lines += [f"## {title}, {n} images", "",
                  "| method | PSNR (dB) | SSIM | kernel MNC | seconds |", "| --- | --- | --- | --- | --- |"]
        base = res["untuned"]["mean"]
        lines.append(f"| blurred input | {base['psnr_input']:.2f} | {base['ssim_input']:.4f} | - | - |")
        for method in ("untuned", "tuned"):
            if method in res:
                m = res[method]["mean"]
                lines.append(f"| {method} | {m['psnr']:.2f} | {m['ssim']:.4f} | {m['kernel_mnc']:.3f} | "
                             f"{res[method]['seconds']:.0f} |")
        lines.append("")
        if dataset == "levin":
            by_kernel = {}
            for method in ("untuned", "tuned"):
                for row in res.get(method, {}).get("images", []):
                    j = row["name"].split("kernel")[1]
                    by_kernel.setdefault(j, {}).setdefault(method, []).append(row)
            lines += ["| kernel | input PSNR | untuned PSNR / MNC | tuned PSNR / MNC |",
                      "| --- | --- | --- | --- |"]
            for j in sorted(by_kernel, key=int):
                cells = []
                for method in ("untuned", "tuned"):
                    rows = by_kernel[j].get(method)
                    cells.append(f"{_mean(rows, 'psnr'):.2f} / {_mean(rows, 'kernel_mnc'):.3f}"
                                 if rows else "-")
                lines.append(f"| {j} | {_mean(by_kernel[j]['untuned'], 'psnr_input'):.2f} | "
                             f"{cells[0]} | {cells[1]} |")
            lines.append("")
    lines.append(f"Scores: PSNR/SSIM after the best integer shift within +-{config['max_shift']} px, "
                 f"{config['border']} px border ignored, output clipped to [0, 1]; kernel MNC against "
                 "the true kernel (Levin: the stored kernel rotated by 180 degrees).")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------


def _check_flags():
    if not FLAGS.workdir:
        raise UsageError("give --workdir=DIR (the output folder)")
    positive = {"iterations": FLAGS.iterations, "scales": FLAGS.scales, "eval_batch": FLAGS.eval_batch,
                "tune_pairs": FLAGS.tune_pairs, "tune_batch": FLAGS.tune_batch}
    for name, value in positive.items():
        if value < 1:
            raise UsageError(f"--{name} must be >= 1, got {value}")
    for name in ("final_iterations", "tune_steps", "border", "max_shift"):
        if FLAGS[name].value < 0:
            raise UsageError(f"--{name} must be >= 0, got {FLAGS[name].value}")
    if FLAGS.kernel_size < 3 or FLAGS.kernel_size % 2 == 0:
        raise UsageError(f"--kernel_size must be an odd integer >= 3, got {FLAGS.kernel_size}")
    if not 1 <= FLAGS.shifts <= 8:
        raise UsageError(f"--shifts must be in 1..8, got {FLAGS.shifts}")
    if FLAGS.tune_patch < 2 * FLAGS.kernel_size:
        raise UsageError(f"--tune_patch {FLAGS.tune_patch} must be at least twice --kernel_size")
    if FLAGS.tune_lr <= 0 or FLAGS.noise < 0:
        raise UsageError("--tune_lr must be > 0 and --noise >= 0")


def run(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {' '.join(argv[1:])!r} (flags look like --name=value)")
    _check_flags()
    levin = load_levin(_levin_root(), FLAGS.levin_subset)  # fail early on bad data, before JAX work
    if 2 * FLAGS.border + 2 * FLAGS.max_shift >= min(levin[0][1].shape[:2]):
        raise UsageError("--border and --max_shift leave nothing of the image to score")
    workdir = Path(FLAGS.workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    import jax
    import numpy as np

    from unroll import classical

    config = {k: FLAGS[k].value for k in (
        "iterations", "scales", "final_iterations", "kernel_size", "threshold", "shifts",
        "tune_steps", "tune_lr", "tune_pairs", "tune_batch", "tune_patch", "tune_kernel_weight",
        "noise", "eval_batch", "border", "max_shift", "seed", "levin_subset")}
    config["levin_dir"] = str(_levin_root())
    options = dict(iterations=FLAGS.iterations, kernel_size=FLAGS.kernel_size,
                   threshold=FLAGS.threshold, shifts=FLAGS.shifts)
    params0 = classical.default_params(FLAGS.iterations, FLAGS.scales, FLAGS.final_iterations)
    builtin = load_builtin(FLAGS.kernel_size, FLAGS.noise, FLAGS.seed)
    results = {"config": config}
    timings = {}

    # Tuning on synthetic training pairs.
    params = params0
    if FLAGS.tune_steps:
        t0 = time.time()
        pairs = classical.make_training_pairs(FLAGS.tune_pairs, FLAGS.tune_patch, FLAGS.kernel_size,
                                              seed=FLAGS.seed, noise=FLAGS.noise)

        def log(step, value):
            print(f"tune step {step:4d}  loss {value:8.3f} (-PSNR dB)  {time.time() - t0:6.0f} s",
                  flush=True)

        params, history = classical.tune(
            params0, pairs, FLAGS.tune_steps, FLAGS.tune_lr, kernel_size=FLAGS.kernel_size,
            batch_size=FLAGS.tune_batch, seed=FLAGS.seed, kernel_weight=FLAGS.tune_kernel_weight,
            log_every=max(1, FLAGS.tune_steps // 10), callback=log, threshold=FLAGS.threshold,
            shifts=FLAGS.shifts)
        timings["tune"] = time.time() - t0
        results["tuning"] = {"history": history}
        with atomic.writing(workdir / "tuned_params.npz") as tmp:
            np.savez(tmp, **jax.tree.map(np.asarray, params))
        constrained = classical.constrain(params)
        results["tuned_params"] = {k: np.asarray(v, np.float64).tolist() for k, v in constrained.items()}

    methods = {"untuned": params0} | ({"tuned": params} if FLAGS.tune_steps else {})
    for dataset, examples in (("levin", levin), ("builtin", builtin)):
        results[dataset] = {}
        for method, p in methods.items():
            rows, seconds = evaluate(examples, p, options, FLAGS.eval_batch, FLAGS.border,
                                     FLAGS.max_shift)
            results[dataset][method] = {"mean": summary(rows), "seconds": seconds, "images": rows}
            m = results[dataset][method]["mean"]
            print(f"{dataset:8s} {method:8s} PSNR {m['psnr']:.2f} (input {m['psnr_input']:.2f})  "
                  f"SSIM {m['ssim']:.4f}  kernel MNC {m['kernel_mnc']:.3f}  {seconds:.0f} s", flush=True)
    results["timings"] = timings
    atomic.write_json(workdir / "classical.json", results)
    table = markdown(results, config)
    atomic.write_text(workdir / "classical.md", table)
    print(table)


def main(argv):
    run_reporting_user_errors(run, argv)


if __name__ == "__main__":
    hostmem.configure()  # reuse XLA:CPU's per-step buffers (unroll/hostmem.py)
    app.run(main)
