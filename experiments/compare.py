"""MGSTNet against the CNN baselines (paper Table VI and Fig. 5) under one data set, seed and budget.

    python -m experiments.compare --flagfile=experiments/flags/compare.flags --workdir=/tmp/compare

Trains and evaluates every model of --models at every noise level of --noise_levels (the paper's
AIRS and AIRS(+) columns: without and with noise), each in `DIR/<model>/noise=<level>/` (resumable:
rerun the command after a kill), then writes `DIR/compare.csv`, `DIR/compare.md` (Table VI: model,
interpretable, estimates the kernel, parameters, PSNR / SSIM / RMSE per noise level) and
`DIR/psnr_boxplot_noise=<level>.png` (Fig. 5). The baselines use --baseline_features as their
first-level width when it is given, else --features.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from absl import app, flags

from experiments.common import (
    FLAGS,
    config_from_flags,
    define_config_flags,
    define_workdir_flag,
    no_positional_arguments,
    run_reporting_user_errors,
)
from unroll.config import MODELS, Config, ConfigError

define_config_flags()
define_workdir_flag("workdir", "output directory: one run per model and noise level, and the tables")

flags.DEFINE_list("models", list(MODELS), f"models to compare: {', '.join(MODELS)}")
flags.DEFINE_list("noise_levels", ["0", "0.001"], "noise standard deviations (train and test)")
flags.DEFINE_integer("baseline_features", 0, "first-level width of the baselines (0: --features)")

COLUMNS = ("model", "noise", "interpretable", "estimates_kernel", "num_params", "psnr", "ssim", "rmse",
           "psnr_input", "psnr_q1", "psnr_median", "psnr_q3", "kernel_mnc", "step", "train_seconds")


def make_runs(base: Config, models, noise_levels, baseline_features: int = 0):
    """(model, noise, config) per run; everything but the model (and its width) equals `base`."""
    runs = []
    for noise in noise_levels:
        for model in models:
            if model not in MODELS:
                raise ConfigError(f"--models: {model!r} is not one of {', '.join(MODELS)}")
            changes = {"model": model, "noise": noise}
            if model != "mgstnet" and baseline_features:
                changes["features"] = baseline_features
            runs.append((model, noise, dataclasses.replace(base, **changes).validate()))
    return runs


def _per_image(run_dir: Path, column: str) -> list[float]:
    with open(run_dir / "eval" / "per_image.csv") as f:
        return [float(r[column]) for r in csv.DictReader(f)]


def _fmt(v, digits):
    return "-" if v is None else f"{v:.{digits}f}"


def markdown(rows: list[dict], noise_levels, base: Config) -> str:
    budget = f"{base.steps} steps" if base.steps else f"{base.epochs} epochs"
    lines = ["# MGSTNet against the CNN baselines (paper Table VI)\n",
             f"Same data, seed {base.seed} and budget for every model: {budget}, batch "
             f"{base.batch_size}, patch {base.patch_size}, blur sigma in [{base.sigma_min}, "
             f"{base.sigma_max}]. PSNR / SSIM / RMSE (0-255) on the test set.\n"]
    header = ["model", "interpretable", "kernel", "parameters"]
    header += [f"noise {n}: PSNR / SSIM / RMSE" for n in noise_levels]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    models = list(dict.fromkeys(r["model"] for r in rows))
    inputs = {n: next(r for r in rows if r["noise"] == n) for n in noise_levels}  # same test images
    lines.append("| blurred input | - | - | - | " + " | ".join(
        f"{_fmt(inputs[n]['psnr_input'], 2)} / {_fmt(inputs[n]['ssim_input'], 4)} / "
        f"{_fmt(inputs[n]['rmse_input'], 3)}" for n in noise_levels) + " |")
    for model in models:
        mine = {r["noise"]: r for r in rows if r["model"] == model}
        any_row = next(iter(mine.values()))
        cells = [model, "yes" if any_row["interpretable"] else "no",
                 "yes" if any_row["estimates_kernel"] else "no", f"{any_row['num_params'] / 1e6:.3f}M"]
        cells += [f"{_fmt(mine[n]['psnr'], 2)} / {_fmt(mine[n]['ssim'], 4)} / {_fmt(mine[n]['rmse'], 3)}"
                  for n in noise_levels]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare(base: Config, models, noise_levels, workdir, baseline_features: int = 0) -> list[dict]:
    from unroll import plots, train
    from unroll.models import registry

    workdir = Path(workdir)
    runs = make_runs(base, models, noise_levels, baseline_features)
    rows = []
    for model, noise, config in runs:
        run_dir = workdir / model / f"noise={noise}"
        results = train.finished_or_train(config, run_dir, f"{model} (noise {noise})")
        spec = registry.spec(model)
        rows.append({**results, "model": model, "noise": noise, "interpretable": spec.interpretable,
                     "estimates_kernel": spec.estimates_kernel, "run_dir": run_dir})
    with open(workdir / "compare.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    for noise in noise_levels:
        mine = [r for r in rows if r["noise"] == noise]
        values = {"blurred": _per_image(mine[0]["run_dir"], "psnr_input")}
        values.update({m["model"]: _per_image(m["run_dir"], "psnr") for m in mine})
        plots.psnr_boxplot(workdir / f"psnr_boxplot_noise={noise}.png", values)
    (workdir / "compare.md").write_text(markdown(rows, list(noise_levels), base))
    print((workdir / "compare.md").read_text())
    return rows


def run(argv):
    no_positional_arguments(argv)
    base = config_from_flags().validate()
    try:
        noise_levels = [float(n) for n in FLAGS.noise_levels]
    except ValueError:
        raise ConfigError(f"--noise_levels={','.join(FLAGS.noise_levels)}: need numbers") from None
    if not FLAGS.models or not noise_levels:
        raise ConfigError("--models and --noise_levels must not be empty")
    compare(base, FLAGS.models, noise_levels, FLAGS.workdir, FLAGS.baseline_features)


def main(argv):
    run_reporting_user_errors(run, argv)


if __name__ == "__main__":
    app.run(main)
