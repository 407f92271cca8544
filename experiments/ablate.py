"""Ablations of MGSTNet (paper Section III-B): one variant per value of each swept axis, everything
else (data, seed, step budget) equal to the base configuration given by the flags.

    python -m experiments.ablate --flagfile=experiments/flags/tiny.flags --workdir=/tmp/ablate \\
        --sweep=stages --values=1,2,3 [--sweep=threshold --values=gst,soft ...]

Axes: stages, scales, kernel_rcabs, image_rcabs (Tables V, III, I, IV), threshold (GST_p against
soft), kernel_prox (KPM on/off), image_prior (IPMM: paper, unet, haar_gst; `unroll.models.priors`).
Sweeps vary one axis at a time around the base, as the paper does (it runs every ablation but the
stage count with one stage: pass --stages=1 for that).

Writes under DIR: one training run per variant (`DIR/<axis>=<value>/`, resumable: rerun the command
after a kill; a report of an earlier run that cannot be read is redone, with a note),
`ablation.csv` (one row per variant), `ablation.md` (tables in the paper's form, the kernel table
of Table II: MNC / MSE / RMSE of s/||s||_1 and of h against the true kernel, and the
compile time against the stage count), `compile.csv`, and `convergence_<axis>.png` (PSNR against
training step per variant, Fig. 2). Compiled code is reused across variants and reruns through JAX's
persistent compilation cache (`DIR/jax_cache` unless JAX_COMPILATION_CACHE_DIR is set).
"""

from __future__ import annotations

import dataclasses
import json
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
from unroll.config import Config, ConfigError

define_config_flags()
define_workdir_flag("workdir", "output directory: one run per variant, and the tables")

AXES = ("stages", "scales", "kernel_rcabs", "image_rcabs", "threshold", "kernel_prox", "image_prior")
PAPER_TABLES = {"kernel_rcabs": "Table I", "scales": "Table III", "image_rcabs": "Table IV",
                "stages": "Table V"}

flags.DEFINE_multi_string("sweep", [], f"axis to sweep (repeatable): {', '.join(AXES)}")
flags.DEFINE_multi_string("values", [], "comma-separated values of the matching --sweep")
flags.DEFINE_list("compile_stages", [], "stage counts for the compile-time table "
                  "(default: the swept stage counts, or 1,2,3 when stages is not swept)")


# ----------------------------------------------------------------------------------------------------
# Variants.


def _parse(axis: str, text: str):
    kind = type(getattr(Config(), axis))
    if kind is bool:
        lowered = text.strip().lower()
        if lowered not in ("true", "false", "1", "0", "on", "off"):
            raise ConfigError(f"--values for --sweep={axis}: {text!r} is not true/false")
        return lowered in ("true", "1", "on")
    try:
        return kind(text.strip())
    except ValueError:
        raise ConfigError(f"--values for --sweep={axis}: {text!r} is not a {kind.__name__}") from None


def parse_sweeps(sweeps: list[str], values: list[str]) -> dict[str, list]:
    if not sweeps:
        raise ConfigError(f"--sweep is required: one of {', '.join(AXES)}")
    if len(sweeps) != len(values):
        raise ConfigError(f"--sweep is given {len(sweeps)} times but --values {len(values)} times; "
                          "give one --values per --sweep")
    parsed = {}
    for axis, text in zip(sweeps, values):
        if axis not in AXES:
            raise ConfigError(f"--sweep={axis}: not an ablation axis; use one of {', '.join(AXES)}")
        if axis in parsed:
            raise ConfigError(f"--sweep={axis} is given twice")
        items = [v for v in text.split(",") if v.strip()]
        if not items:
            raise ConfigError(f"--values for --sweep={axis} is empty")
        parsed[axis] = [_parse(axis, v) for v in items]
    return parsed


def variant_name(axis: str, value) -> str:
    return f"{axis}={str(value).lower() if isinstance(value, bool) else value}"


def make_variants(base: Config, sweeps: dict[str, list]) -> list[tuple[str, str, object, Config]]:
    """(name, axis, value, config) for each sweep value; every config is validated up front."""
    variants = []
    for axis, values in sweeps.items():
        for value in values:
            config = dataclasses.replace(base, **{axis: value})
            if config.model != "mgstnet":
                raise ConfigError(f"--model={config.model}: ablations are of MGSTNet")
            config.validate()
            variants.append((variant_name(axis, value), axis, value, config))
    return variants


# ----------------------------------------------------------------------------------------------------
# Measurements.


def kernel_table(config: Config, workdir: Path) -> dict:
    """Table II: kernel metrics of the last stage's gradient-step kernel s/||s||_1 and of its output h."""
    import jax.numpy as jnp
    import numpy as np

    import unroll
    from unroll.train.evaluation import kernel_scores, make_eval_set

    model = unroll.load(workdir, "latest")
    rows = {"s": [], "h": []}
    for example in make_eval_set(config):
        if "kernel" not in example:
            continue
        out = model(jnp.asarray(example["blurred"])[None])
        s = np.asarray(out.kgdm_kernels[-1][0])
        rows["s"].append(kernel_scores(s / max(np.abs(s).sum(), 1e-12), example["kernel"]))
        rows["h"].append(kernel_scores(np.asarray(out.kernels[-1][0]), example["kernel"]))
    return {f"{which}_{k}": float(np.mean([r[k] for r in values]))
            for which, values in rows.items() if values for k in values[0]}


# ----------------------------------------------------------------------------------------------------
# Running and reporting.


COLUMNS = ("variant", "axis", "value", "num_params", "psnr", "ssim", "rmse", "psnr_input",
           "ssim_input", "kernel_mnc", "s_kernel_mnc", "s_kernel_mse", "s_kernel_rmse",
           "h_kernel_mnc", "h_kernel_mse", "h_kernel_rmse", "step", "train_seconds")


def write_csv(path: Path, rows: list[dict], columns=COLUMNS):
    atomic.write_csv(path, rows, columns, extrasaction="ignore")


def _fmt(value, digits):
    if value is None:
        return "-"
    if isinstance(value, float) and digits == "e":
        return f"{value:.4e}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict], compile_rows: list[dict], base: Config) -> str:
    lines = [f"# MGSTNet ablations\n\nBase: {json.dumps(base.model_signature())}; "
             f"{base.steps or base.epochs} {'steps' if base.steps else 'epochs'}, batch "
             f"{base.batch_size}, patch {base.patch_size}, seed {base.seed}.\n"]
    for axis in dict.fromkeys(r["axis"] for r in rows):
        group = [r for r in rows if r["axis"] == axis]
        title = PAPER_TABLES.get(axis, "")
        lines.append(f"## {axis}{f' (paper {title})' if title else ''}\n")
        lines.append("| " + " | ".join([axis] + [str(r["value"]) for r in group]) + " |")
        lines.append("|" + "---|" * (len(group) + 1))
        for key, label, digits in (("psnr", "PSNR", 2), ("ssim", "SSIM", 4), ("rmse", "RMSE", 4),
                                   ("psnr_input", "PSNR of the blurred input", 2),
                                   ("kernel_mnc", "kernel MNC", 4), ("num_params", "parameters", 0),
                                   ("train_seconds", "train s", 1)):
            lines.append("| " + " | ".join([label] + [_fmt(r.get(key), digits) for r in group]) + " |")
        lines.append("")
    with_kernels = [r for r in rows if r.get("h_kernel_mnc") is not None]
    if with_kernels:
        lines.append("## Kernel estimates, last stage (paper Table II): s/||s||_1 (gradient step) "
                     "against h (after KPM)\n")
        lines.append("| variant | MNC s | MNC h | MSE s | MSE h | RMSE s | RMSE h |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in with_kernels:
            lines.append(f"| {r['variant']} | {_fmt(r['s_kernel_mnc'], 4)} | {_fmt(r['h_kernel_mnc'], 4)} "
                         f"| {_fmt(r['s_kernel_mse'], 'e')} | {_fmt(r['h_kernel_mse'], 'e')} "
                         f"| {_fmt(r['s_kernel_rmse'], 'e')} | {_fmt(r['h_kernel_rmse'], 'e')} |")
        lines.append("")
    if compile_rows:
        lines.append("## Compile time of one train step against the stage count (seconds)\n")
        stages = sorted({r["stages"] for r in compile_rows})
        lines.append("| stages | " + " | ".join(map(str, stages)) + " |")
        lines.append("|" + "---|" * (len(stages) + 1))
        for mode, label in (("scan", "scan"), ("remat", "scan + remat"), ("unrolled", "unrolled")):
            by = {r["stages"]: r for r in compile_rows if r["mode"] == mode}
            if by:
                lines.append(f"| {label} | " + " | ".join(
                    _fmt(by[s]["trace_lower_s"] + by[s]["compile_s"], 1) for s in stages) + " |")
        lines.append("")
    return "\n".join(lines)


def convergence_plots(rows: list[dict], workdir: Path):
    from unroll import plots

    for axis in dict.fromkeys(r["axis"] for r in rows):
        curves = {r["value"]: plots.read_log(workdir / r["variant"] / "log.jsonl").get("eval_psnr", {})
                  for r in rows if r["axis"] == axis}
        plots.convergence(workdir / f"convergence_{axis}.png", curves, title=f"MGSTNet: {axis}")


def ablate(base: Config, sweeps: dict[str, list], workdir, compile_stages=None) -> list[dict]:
    """Run every variant (resuming), then write the CSV, the Markdown tables and the plots."""
    import jax

    from unroll import train

    workdir = Path(workdir)
    variants = make_variants(base, sweeps)
    workdir.mkdir(parents=True, exist_ok=True)
    if not jax.config.jax_compilation_cache_dir:  # keep a cache the user (or a test) chose
        jax.config.update("jax_compilation_cache_dir", str(workdir / "jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

    if compile_stages is None:
        compile_stages = sweeps.get("stages", [1, 2, 3])
    compile_rows = train.compile_seconds(base, sorted(set(compile_stages))) if compile_stages else []
    write_csv(workdir / "compile.csv", compile_rows, ("stages", "mode", "remat", "trace_lower_s", "compile_s"))

    rows = []
    for name, axis, value, config in variants:
        if config.eval_every == 0:  # convergence curves need evaluations during training
            total, _ = config.schedule(1)
            config = dataclasses.replace(config, eval_every=max(1, total // 5))
        results = train.finished_or_train(config, workdir / name, name)
        row = {"variant": name, "axis": axis, "value": value, **results}
        row.update(kernel_table(config, workdir / name))
        rows.append(row)
    write_csv(workdir / "ablation.csv", rows)
    table = markdown(rows, compile_rows, base)
    atomic.write_text(workdir / "ablation.md", table)
    convergence_plots(rows, workdir)
    print(table)
    return rows


def run(argv):
    no_positional_arguments(argv)
    base = config_from_flags().validate()
    sweeps = parse_sweeps(FLAGS.sweep, FLAGS.values)
    try:
        stages = [int(s) for s in FLAGS.compile_stages] if FLAGS.compile_stages else None
    except ValueError:
        raise ConfigError(f"--compile_stages={','.join(FLAGS.compile_stages)}: "
                          "need integers") from None
    ablate(base, sweeps, FLAGS.workdir, stages)


def main(argv):
    run_reporting_user_errors(run, argv)


if __name__ == "__main__":
    hostmem.configure()  # reuse XLA:CPU's per-step buffers (unroll/hostmem.py)
    app.run(main)
