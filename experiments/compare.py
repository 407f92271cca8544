"""MGSTNet against the CNN baselines (paper Table VI and Fig. 5) under one data set, seed and budget.

    python -m experiments.compare --flagfile=experiments/flags/compare.flags --workdir=/tmp/compare

Trains and evaluates every model of --models at every noise level of --noise_levels (the paper's
AIRS and AIRS(+) columns: without and with noise), each in `DIR/<model>/noise=<level>/` (resumable:
rerun the command after a kill; a report of an earlier run that cannot be read is redone, with a
note), then writes `DIR/compare.csv`, `DIR/compare.md` (Table VI: model, interpretable, estimates
the kernel, parameters, PSNR / SSIM / RMSE per noise level) and
`DIR/psnr_boxplot_noise=<level>.png` (Fig. 5). The baselines use --baseline_features as their
first-level width when it is given, else --features.

An equal wall-clock budget: `--model_steps=madn:N,...` trains a model for N steps instead of --steps
(its final learning-rate phase scaled to the same fraction), N chosen from each model's measured
seconds per step; `--model_learning_rates=madn:LR,...` gives a model its own learning rate (a
baseline that diverges at the shared one, at its paper's rate). `classical` in --models adds the L0
blind solver (`unroll.classical.l0`, kernel on the luminance, then the non-blind step per channel;
no training) on the same test images. With class
subfolders in the test set, compare.md also gets a per-class PSNR table.
"""

from __future__ import annotations

import csv
import dataclasses
import math
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
from unroll import atomic, hostmem
from unroll.config import MODELS, Config, ConfigError

define_config_flags()
define_workdir_flag("workdir", "output directory: one run per model and noise level, and the tables")

flags.DEFINE_list("models", list(MODELS), f"models to compare: {', '.join(MODELS)}, a model registered "
                  "by a module of --imports, and classical (the L0 blind solver, no training)")
flags.DEFINE_list("noise_levels", ["0", "0.001"], "noise standard deviations (train and test)")
flags.DEFINE_integer("baseline_features", 0, "first-level width of the baselines (0: --features)")
flags.DEFINE_list("model_steps", [], "MODEL:STEPS,...: train these models for STEPS instead of --steps "
                  "(an equal wall-clock budget)")
flags.DEFINE_list("model_learning_rates", [], "MODEL:LR,...: train these models at LR instead of "
                  "--learning_rate (--final_learning_rate scaled alike), e.g. a baseline at its paper's rate")

COLUMNS = ("model", "noise", "interpretable", "estimates_kernel", "num_params", "psnr", "ssim", "rmse",
           "psnr_input", "psnr_q1", "psnr_median", "psnr_q3", "kernel_mnc", "step", "learning_rate",
           "train_seconds")


CLASSICAL = "classical"


def _models() -> tuple[str, ...]:
    """The built-in models and those registered (`unroll.models.registry.register`, e.g. by a module
    of --imports)."""
    from unroll.models import registry

    return tuple(registry.MODELS)


def _parse_model_values(items, flag: str, what: str, cast) -> dict:
    """["madn:5000", ...] -> {"madn": cast("5000")}; a malformed item is a ConfigError naming the flag."""
    values = {}
    for item in items:
        model, _, text = item.partition(":")
        try:
            value = cast(text)
        except ValueError:
            value = None
        if model not in _models() or value is None or not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"--{flag}: {item!r} is not MODEL:{what} with MODEL one of "
                              f"{', '.join(_models())} and {what} a positive {cast.__name__}")
        values[model] = value
    return values


def parse_model_steps(items) -> dict[str, int]:
    """["madn:5000", ...] -> {"madn": 5000}."""
    return _parse_model_values(items, "model_steps", "STEPS", int)


def parse_model_learning_rates(items) -> dict[str, float]:
    """["madn:1e-4", ...] -> {"madn": 1e-4}."""
    return _parse_model_values(items, "model_learning_rates", "LR", float)


def make_runs(base: Config, models, noise_levels, baseline_features: int = 0,
              model_steps: dict[str, int] | None = None,
              model_learning_rates: dict[str, float] | None = None):
    """(model, noise, config) per run; everything but the model (its width, its steps in
    `model_steps` and its learning rate in `model_learning_rates`) equals `base`. `classical` runs
    carry `base` as it is (no network)."""
    model_steps, model_learning_rates = model_steps or {}, model_learning_rates or {}
    if model_steps and not base.steps:
        raise ConfigError("--model_steps needs a step budget (--steps), not --epochs")
    runs = []
    for noise in noise_levels:
        for model in models:
            if model not in _models() and model != CLASSICAL:
                raise ConfigError(f"--models: {model!r} is not one of {', '.join(_models())}, {CLASSICAL}"
                                  " (--imports=MODULE imports a module that registers a model)")
            if model == CLASSICAL:
                runs.append((model, noise, dataclasses.replace(base, noise=noise).validate()))
                continue
            changes = {"model": model, "noise": noise}
            if model != "mgstnet" and baseline_features:
                changes["features"] = baseline_features
            if model in model_steps:
                n = model_steps[model]
                changes.update(steps=n, final_lr_steps=round(base.final_lr_steps * n / base.steps))
            if model in model_learning_rates:
                lr = model_learning_rates[model]
                changes.update(learning_rate=lr,
                               final_learning_rate=base.final_learning_rate * lr / base.learning_rate)
            runs.append((model, noise, dataclasses.replace(base, **changes).validate()))
    return runs


def classical_run(config: Config, run_dir: Path) -> dict:
    """The L0 blind solver on `config`'s test set, scored as the networks are (resumable: a finished
    run's metrics.json is reused)."""
    import time

    import jax.numpy as jnp

    from unroll import nonblind
    from unroll.classical import l0
    from unroll.data.pipeline import LUMA
    from unroll.models.registry import ModelSpec
    from unroll.train.evaluation import evaluate, make_eval_set, read_report

    done = read_report(run_dir, "evaluating the classical solver again")
    if done is not None and "train_seconds" in done:
        return done

    def predict(_, g):  # g [1, H, W, C]: the kernel from the luminance (band mean), then every band
        gray = g[0] @ jnp.asarray(LUMA) if g.shape[-1] == 3 else g[0].mean(-1)
        h = l0.estimate_kernel(gray, config.kernel_size)  # both steps are jitted inside
        return nonblind.deconvolve(g[0], h)[None], h[None]

    spec = ModelSpec(build=None, image=lambda out: out[0], kernel=lambda out: out[1],
                     stage_images=lambda out: (out[0],), estimates_kernel=True)
    t0 = time.perf_counter()
    results = evaluate(predict, None, make_eval_set(config), config, out_dir=run_dir,
                       extra={"model": CLASSICAL, "num_params": 0, "step": 0}, spec=spec)
    results["train_seconds"] = 0.0
    results["eval_seconds"] = round(time.perf_counter() - t0, 1)
    atomic.write_json(run_dir / "metrics.json", results)
    return results


def _per_image(run_dir: Path, column: str) -> list[float]:
    with open(run_dir / "eval" / "per_image.csv") as f:
        return [float(r[column]) for r in csv.DictReader(f)]


def _fmt(v, digits):
    return "-" if v is None else f"{v:.{digits}f}"


def markdown(rows: list[dict], noise_levels, base: Config) -> str:
    budget = f"{base.steps} steps" if base.steps else f"{base.epochs} epochs"
    lines = ["# MGSTNet against the CNN baselines (paper Table VI)\n",
             f"Same data and seed for every model; budget {budget} and learning rate "
             f"{base.learning_rate:g} unless the steps and lr columns say otherwise, "
             f"batch {base.batch_size}, patch {base.patch_size}, blur sigma in "
             f"[{base.sigma_min}, {base.sigma_max}]. PSNR / SSIM / RMSE (0-255) / kernel MNC on the test "
             "set; train minutes as measured.\n"]
    header = ["model", "interpretable", "kernel", "parameters", "steps", "lr", "train min"]
    header += [f"noise {n}: PSNR / SSIM / RMSE / MNC" for n in noise_levels]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    models = list(dict.fromkeys(r["model"] for r in rows))
    inputs = {n: next(r for r in rows if r["noise"] == n) for n in noise_levels}  # same test images
    lines.append("| blurred input | - | - | - | - | - | - | " + " | ".join(
        f"{_fmt(inputs[n]['psnr_input'], 2)} / {_fmt(inputs[n]['ssim_input'], 4)} / "
        f"{_fmt(inputs[n]['rmse_input'], 3)} / -" for n in noise_levels) + " |")
    for model in models:
        mine = {r["noise"]: r for r in rows if r["model"] == model}
        any_row = next(iter(mine.values()))
        minutes = any_row.get("train_seconds")
        cells = [model, "yes" if any_row["interpretable"] else "no",
                 "yes" if any_row["estimates_kernel"] else "no",
                 f"{any_row['num_params'] / 1e6:.3f}M" if any_row["num_params"] else "-",
                 str(any_row.get("step") or "-"),
                 f"{any_row['learning_rate']:g}" if any_row.get("learning_rate") else "-",
                 _fmt(minutes / 60 if minutes else None, 1)]
        cells += [f"{_fmt(mine[n]['psnr'], 2)} / {_fmt(mine[n]['ssim'], 4)} / {_fmt(mine[n]['rmse'], 3)}"
                  f" / {_fmt(mine[n].get('kernel_mnc'), 3)}" for n in noise_levels]
        lines.append("| " + " | ".join(cells) + " |")
    for n in noise_levels:
        classes = sorted(inputs[n].get("per_class", {}))
        if not classes:
            continue
        lines += [f"\nPSNR per class, noise {n}:\n", "| model | " + " | ".join(classes) + " |",
                  "|" + "---|" * (len(classes) + 1)]
        per_input = _per_class_input(inputs[n]["run_dir"])
        lines.append("| blurred input | " + " | ".join(_fmt(per_input.get(c), 2) for c in classes) + " |")
        for model in models:
            r = next(r for r in rows if r["model"] == model and r["noise"] == n)
            lines.append(f"| {model} | " + " | ".join(_fmt(r["per_class"][c]["psnr"], 2) for c in classes)
                         + " |")
    return "\n".join(lines) + "\n"


def _per_class_input(run_dir: Path) -> dict[str, float]:
    """Mean input PSNR per class, from a run's per-image CSV (the summary keeps the outputs' only)."""
    by_class: dict[str, list[float]] = {}
    with open(run_dir / "eval" / "per_image.csv") as f:
        for r in csv.DictReader(f):
            by_class.setdefault(r["class_name"], []).append(float(r["psnr_input"]))
    return {c: sum(v) / len(v) for c, v in by_class.items()}


def compare(base: Config, models, noise_levels, workdir, baseline_features: int = 0,
            model_steps: dict[str, int] | None = None,
            model_learning_rates: dict[str, float] | None = None) -> list[dict]:
    from unroll import plots, train
    from unroll.models import registry

    workdir = Path(workdir)
    runs = make_runs(base, models, noise_levels, baseline_features, model_steps, model_learning_rates)
    rows = []
    for model, noise, config in runs:
        run_dir = workdir / model / f"noise={noise}"
        if model == CLASSICAL:
            results = classical_run(config, run_dir)
            kind = {"interpretable": True, "estimates_kernel": True}
        else:
            results = train.finished_or_train(config, run_dir, f"{model} (noise {noise})")
            spec = registry.spec(model)
            kind = {"interpretable": spec.interpretable, "estimates_kernel": spec.estimates_kernel}
        rows.append({**results, "model": model, "noise": noise, **kind, "run_dir": run_dir,
                     "learning_rate": None if model == CLASSICAL else config.learning_rate})
    atomic.write_csv(workdir / "compare.csv", rows, COLUMNS, extrasaction="ignore")
    for noise in noise_levels:
        mine = [r for r in rows if r["noise"] == noise]
        values = {"blurred": _per_image(mine[0]["run_dir"], "psnr_input")}
        values.update({m["model"]: _per_image(m["run_dir"], "psnr") for m in mine})
        plots.psnr_boxplot(workdir / f"psnr_boxplot_noise={noise}.png", values)
    table = markdown(rows, list(noise_levels), base)
    atomic.write_text(workdir / "compare.md", table)
    print(table)
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
    compare(base, FLAGS.models, noise_levels, FLAGS.workdir, FLAGS.baseline_features,
            parse_model_steps(FLAGS.model_steps), parse_model_learning_rates(FLAGS.model_learning_rates))


def main(argv):
    run_reporting_user_errors(run, argv)


if __name__ == "__main__":
    hostmem.configure()  # reuse XLA:CPU's per-step buffers (unroll/hostmem.py)
    app.run(main)
