"""Evaluation on a fixed set: image and kernel metrics per image, their summary, a table and pictures.

Metrics (unroll.metrics): PSNR, SSIM and RMSE (0-255) of the output and of the blurred input
(clipped to [0, 1], as a viewer would see it); kernel MNC, MSE and RMSE where the true kernel is
known. The summary has means, PSNR quartiles (Q1, median, Q3: the paper's Fig. 5) and per-class
means when the set has class subfolders (the paper's Table VII).
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from unroll import atomic, data, metrics, noise, plots
from unroll.config import Config
from unroll.models import registry

IMAGE_METRICS = ("psnr", "ssim", "rmse")
KERNEL_METRICS = ("kernel_mnc", "kernel_mse", "kernel_rmse")


def image_scores(restored, blurred, sharp) -> dict:
    x, y, g = (jnp.asarray(a)[None] for a in (restored, sharp, np.clip(blurred, 0, 1)))
    return {"psnr": float(metrics.psnr(x, y)[0]), "ssim": float(metrics.ssim(x, y)[0]),
            "rmse": float(metrics.rmse(x, y)[0]), "psnr_input": float(metrics.psnr(g, y)[0]),
            "ssim_input": float(metrics.ssim(g, y)[0]), "rmse_input": float(metrics.rmse(g, y)[0])}


def kernel_scores(estimate, truth) -> dict:
    a, b = jnp.asarray(estimate)[None], jnp.asarray(truth)[None]
    return {"kernel_mnc": float(metrics.mnc(a, b)[0]), "kernel_mse": float(metrics.kernel_mse(a, b)[0]),
            "kernel_rmse": float(metrics.kernel_rmse(a, b)[0])}


def _mean(rows, key):
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def summarise(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if k not in ("name", "class_name", "label")]
    summary = {k: _mean(rows, k) for k in keys}
    for k in KERNEL_METRICS:
        summary.setdefault(k, None)
    q1, median, q3 = np.percentile([r["psnr"] for r in rows], [25, 50, 75])
    summary.update(psnr_q1=float(q1), psnr_median=float(median), psnr_q3=float(q3),
                   num_images=len(rows))
    classes = sorted({r["class_name"] for r in rows if r["class_name"]})
    if classes:
        summary["per_class"] = {
            c: {k: _mean([r for r in rows if r["class_name"] == c], k) for k in IMAGE_METRICS}
            for c in classes}
    return summary


def evaluate(predict, params, eval_set, config, out_dir=None, extra: dict | None = None,
             spec: registry.ModelSpec | None = None) -> dict:
    """Run the model on every image of `eval_set`; with `out_dir`, write metrics.json, a per-image CSV,
    sample grids and a PSNR box-plot there and print a table. `spec` reads `predict`'s output
    (default: the registry's spec of `config.model`; a method outside the registry passes its own)."""
    spec = spec or registry.spec(config)
    rows, samples = [], []
    for i in range(len(eval_set)):
        example = eval_set[i]
        out = predict(params, jnp.asarray(example["blurred"])[None])
        restored = np.clip(np.asarray(spec.image(out)[0], np.float32), 0, 1)
        row = {"name": example["name"], "class_name": example.get("class_name", ""),
               **image_scores(restored, example["blurred"], example["sharp"])}
        kernel = spec.kernel(out)
        if kernel is not None and "kernel" in example:
            row.update(kernel_scores(np.asarray(kernel[0]), example["kernel"]))
        rows.append(row)
        if out_dir is not None and i < config.num_samples:
            samples.append((example, [np.asarray(u[0]) for u in spec.stage_images(out)],
                            None if kernel is None else np.asarray(kernel[0])))
    if not rows:
        raise ValueError("the evaluation set is empty")
    summary = summarise(rows)
    summary.update({"model": config.model, "stages": config.stages, **(extra or {})})
    if out_dir is not None and jax.process_index() == 0:  # every process evaluates; one writes
        write_report(Path(out_dir), summary, rows, samples)
    return summary


def write_report(out_dir: Path, summary: dict, rows: list[dict], samples):
    eval_dir = out_dir / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    # The per-image table first: a finished report is metrics.json (written last) with its table.
    atomic.write_csv(eval_dir / "per_image.csv", rows, dict.fromkeys(k for r in rows for k in r))
    atomic.write_json(out_dir / "metrics.json", summary)
    for example, stage_images, kernel in samples:
        name = Path(example["name"]).with_suffix("").as_posix().replace("/", "_")
        plots.sample_grid(eval_dir / f"sample_{name}.png", example["blurred"], stage_images,
                          example["sharp"], kernel, example.get("kernel"))
    plots.psnr_boxplot(eval_dir / "psnr_boxplot.png",
                       {"blurred input": [r["psnr_input"] for r in rows],
                        summary["model"]: [r["psnr"] for r in rows]})
    print(format_table(summary))


def read_report(out_dir, redo: str) -> dict | None:
    """The metrics of a finished report in `out_dir` (`write_report`), or None when there is none or
    it cannot be read or is cut short (metrics.json or eval/per_image.csv, e.g. by a kill in an older
    version): then a note says so and that the work is redone (`redo`)."""
    out_dir = Path(out_dir)
    summary = atomic.read_json(out_dir / "metrics.json", redo)
    if summary is None:
        return None
    table = out_dir / "eval" / "per_image.csv"
    try:
        text = table.read_text()
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        # A row cut short lacks fields (None) or, cut in its last field, the final line end.
        count = sum(None not in row.values() for row in rows) if text.endswith("\n") else -1
    except (OSError, ValueError, csv.Error) as exc:
        count, reason = -1, type(exc).__name__
    else:
        reason = f"{count} complete rows for {summary.get('num_images')} images"
    if not isinstance(summary, dict) or count != summary.get("num_images"):
        print(f"note: {table} cannot be read ({reason}): unfinished work, {redo}", file=sys.stderr)
        return None
    return summary


def format_table(summary: dict) -> str:
    def fmt(v, digits=4):
        return "-" if v is None else f"{v:.{digits}f}"

    lines = [f"{'':12s} {'PSNR':>8s} {'SSIM':>8s} {'RMSE':>8s}",
             f"{'input':12s} {fmt(summary['psnr_input'], 2):>8s} {fmt(summary['ssim_input']):>8s} "
             f"{fmt(summary['rmse_input']):>8s}",
             f"{summary['model']:12s} {fmt(summary['psnr'], 2):>8s} {fmt(summary['ssim']):>8s} "
             f"{fmt(summary['rmse']):>8s}",
             f"PSNR quartiles Q1/median/Q3: {summary['psnr_q1']:.2f} / {summary['psnr_median']:.2f} / "
             f"{summary['psnr_q3']:.2f} over {summary['num_images']} images"]
    if summary.get("kernel_mnc") is not None:
        lines.append(f"kernel MNC {summary['kernel_mnc']:.4f}  MSE {summary['kernel_mse']:.3e}  "
                     f"RMSE {summary['kernel_rmse']:.3e}")
    for c, m in summary.get("per_class", {}).items():
        lines.append(f"  {c:20s} {fmt(m['psnr'], 2)} / {fmt(m['ssim'])} / {fmt(m['rmse'])}")
    return "\n".join(lines)


def make_eval_set(config: Config, noise: float | None = None):
    """The fixed evaluation set of `config` (its test folder, or the built-in test images), with
    noise std `noise` instead of `config.noise` where given (the same blur and, scaled, the same
    noise pattern per scene: `data.example_rng`)."""
    return data.make_eval_dataset(
        config.test_dir or None, kernel_size=config.kernel_size,
        sigma_range=(config.sigma_min, config.sigma_max),
        noise=config.noise if noise is None else noise,
        motion_prob=config.motion_prob, shake_prob=config.shake_prob, quantize=config.quantize,
        seed=config.seed, channels=config.channels, center_crop=config.eval_crop or None,
        contrast=config.eval_contrast)


NOISE_LEVEL_COLUMNS = (("noise", "noise std", 4), ("noise_estimated", "estimated", 4),
                       ("psnr_input", "input PSNR", 2), ("psnr", "output PSNR", 2),
                       ("gain", "mean gain", 2), ("worst_gain", "worst gain", 2),
                       ("below_input", "below input", 0), ("num_images", "images", 0))


def evaluate_noise_levels(predict, params, config: Config, levels, out_dir=None,
                          spec: registry.ModelSpec | None = None) -> list[dict]:
    """Evaluate at each noise std of `levels` on `config`'s test set, the same blurred scenes at
    every level but for the noise (`make_eval_set`): one row per level with the mean input and
    output PSNR (as `evaluate` scores them), the mean gain (output - input), the worst scene's gain
    and its name, how many scenes came out below their input, and the mean noise std that
    `unroll.noise.estimate` reads on the inputs. With `out_dir`, writes `eval/noise_levels.json`
    and `eval/noise_levels.md` there (atomically, the JSON first); prints the table either way.
    A blind method is scored as `evaluate` scores it (no alignment)."""
    spec = spec or registry.spec(config)
    rows = []
    for level in levels:
        eval_set = make_eval_set(config, noise=float(level))
        if not len(eval_set):
            raise ValueError("the evaluation set is empty")
        if "image" not in eval_set.source[0]:
            raise ValueError("noise levels need a test set that unroll blurs itself, not a folder of "
                             "blur/ and sharp/ pairs (their noise is fixed)")
        scores = []
        for i in range(len(eval_set)):
            example = eval_set[i]
            out = predict(params, jnp.asarray(example["blurred"])[None])
            restored = np.clip(np.asarray(spec.image(out)[0], np.float32), 0, 1)
            row = image_scores(restored, example["blurred"], example["sharp"])
            scores.append((example["name"], row["psnr_input"], row["psnr"],
                           noise.estimate(example["blurred"])))
        gains = [out - inp for _, inp, out, _ in scores]
        worst = int(np.argmin(gains))
        rows.append({"noise": float(level),
                     "noise_estimated": float(np.mean([s[3] for s in scores])),
                     "psnr_input": float(np.mean([s[1] for s in scores])),
                     "psnr": float(np.mean([s[2] for s in scores])),
                     "gain": float(np.mean(gains)), "worst_gain": float(gains[worst]),
                     "worst_scene": scores[worst][0],
                     "below_input": int(sum(g < 0 for g in gains)), "num_images": len(scores)})
    if jax.process_index() != 0:  # every process evaluates; one writes and prints
        return rows
    table = noise_level_table(rows, config.model)
    if out_dir is not None:
        eval_dir = Path(out_dir) / "eval"
        eval_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_json(eval_dir / "noise_levels.json", {"model": config.model, "levels": rows})
        atomic.write_text(eval_dir / "noise_levels.md", table + "\n")
    print(table)
    return rows


def noise_level_table(rows: list[dict], model: str) -> str:
    """`evaluate_noise_levels`' rows as a Markdown table (PSNR in dB)."""
    lines = [f"{model}: PSNR (dB) by noise std of the test images",
             "", "| " + " | ".join(title for _, title, _ in NOISE_LEVEL_COLUMNS) + " | worst scene |",
             "|" + "---:|" * len(NOISE_LEVEL_COLUMNS) + "---|"]
    for row in rows:
        cells = [f"{row[key]:.{digits}f}" if digits else str(row[key])
                 for key, _, digits in NOISE_LEVEL_COLUMNS]
        lines.append("| " + " | ".join(cells) + f" | {row['worst_scene']} |")
    return "\n".join(lines)
