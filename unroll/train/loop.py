"""The training loop: `train_and_evaluate` (resuming from the workdir's newest checkpoint), sweeps'
`finished_or_train`, and `evaluate_checkpoint` for `--mode=eval`."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path

import jax

from unroll import atomic, data, plots
from unroll.checkpoint import Checkpoints
from unroll.classical import bank
from unroll.classical.warm import warm_start
from unroll.config import Config, ConfigError
from unroll.models import registry
from unroll.progress import Progress
from unroll.train import distributed, workdir as workdir_lock
from unroll.train.distributed import global_batch, make_mesh
from unroll.train.evaluation import evaluate, evaluate_noise_levels, make_eval_set, read_report
from unroll.train.logs import ScalarLog
from unroll.train.state import init_state, make_optimizer
from unroll.train.steps import make_predict, make_train_step

EVAL_SCALARS = ("psnr", "ssim", "rmse", "psnr_input")


def train_and_evaluate(config: Config, workdir) -> dict:
    """Train (resuming from `workdir`'s newest checkpoint), then evaluate; returns the metrics."""
    config.validate()
    workdir = Path(workdir)
    # Everything that can fail on user input is checked before anything is written to workdir.
    source = data.open_source(config.train_dir or None, channels=config.channels, split="train")
    eval_set = make_eval_set(config)
    for i in range(len(eval_set)):  # a truncated or unreadable test image fails now, not after training
        eval_set[i]
    initial = _initial_params(config)
    mesh = make_mesh()
    if config.batch_size % mesh.size:
        raise ConfigError(f"--batch_size={config.batch_size} is not divisible by the {mesh.size} devices")
    with Checkpoints(workdir, keep=config.keep) as checkpoints:
        checkpoints.check_compatible(config)
        # One writer per workdir (process 0 holds the lock for a multi-process run).
        with workdir_lock.exclusive(workdir) if distributed.is_primary() else contextlib.nullcontext():
            return _train(config, workdir, source, eval_set, mesh, checkpoints, initial)


def _initial_params(config: Config):
    """The `--init_from` weights (a shipped model's or a workdir's), or None; a network that differs
    from the run's is a `ConfigError` naming the first field that differs."""
    if not config.init_from:
        return None
    import unroll
    from unroll.checkpoint import CheckpointError

    try:
        source = unroll.load(config.init_from)
    except (ConfigError, CheckpointError, OSError) as exc:
        raise ConfigError(f"--init_from={config.init_from}: {exc}") from None
    ours, theirs = config.model_signature(), source.config.model_signature()
    for name in ours:
        if ours[name] != theirs.get(name):
            raise ConfigError(f"--init_from={config.init_from}: its network has {name}={theirs.get(name)!r}, "
                              f"this run {ours[name]!r}; fine-tuning needs the same network")
    return source.params


def _kernel_bank(config, workdir, source):
    """The `--kernel_bank` pairs, made in the workdir the first time (every process makes the same,
    from the seed) and read back on a resumed run; None without one."""
    if not config.kernel_bank:
        return None
    degradation = data.Degradation(
        config.kernel_size, (config.sigma_min, config.sigma_max),
        (config.noise, config.noise_max) if config.noise_max > 0 else config.noise,
        config.motion_prob, config.shake_prob, config.quantize, config.noise_power)

    def report(done, total):
        print(f"kernel bank: {done}/{total} classical estimates", file=sys.stderr, flush=True)

    try:
        return bank.build(workdir / "kernel_bank.npz", data.open_source(source, channels=config.channels),
                          degradation, config.kernel_bank, seed=config.seed, progress=report)
    except ValueError as exc:
        raise ConfigError(f"--kernel_bank={config.kernel_bank}: {exc}") from None


def _train(config, workdir, source, eval_set, mesh, checkpoints, initial=None) -> dict:
    total_steps, drop_step = config.schedule(len(source), jax.process_count())
    train_iter = iter(data.make_train_dataset(
        source, patch_size=config.patch_size, batch_size=config.batch_size,
        sigma_range=(config.sigma_min, config.sigma_max), kernel_size=config.kernel_size,
        noise=(config.noise, config.noise_max) if config.noise_max > 0 else config.noise,
        motion_prob=config.motion_prob, seed=config.seed, channels=config.channels,
        num_workers=config.num_workers, gray_prob=config.gray_prob, shake_prob=config.shake_prob,
        quantize=config.quantize, noise_power=config.noise_power, contrast_min=config.contrast_min,
        # A warm-started network trains from perturbed true kernels or a bank of the estimator's
        # real estimates (it is too slow to run per crop) and is evaluated from the estimator's
        # own (`warm_start`).
        initial_kernels=config.kernel_init == "classical",
        kernel_bank=_kernel_bank(config, workdir, source)))
    graphdef, params = registry.build_split(config)
    if initial is not None:  # fine-tuning; a resumed run's checkpoint replaces these below
        params = jax.tree.map(lambda _, p: p, params, initial)
    tx, schedule = make_optimizer(config, total_steps, drop_step)
    state = init_state(params, tx, mesh)
    restored = checkpoints.restore(state)
    if restored is not None:
        step, state, data_state = restored
        train_iter.set_state(data_state)
        print(f"resuming from step {step} in {checkpoints.root}", file=sys.stderr)
    workdir.mkdir(parents=True, exist_ok=True)
    if distributed.is_primary():
        atomic.write_json(workdir / "config.json", config.to_dict())

    train_step = make_train_step(graphdef, config, tx, mesh)
    predict = make_predict(graphdef, config.bf16, warm_start(config))
    step = int(state["step"])
    log = ScalarLog(workdir, resume_step=step)
    progress = Progress(total_steps, "step", start=step, unit=" img/s")
    # Wall-clock seconds of training summed over every run of the command (logged, so a resumed
    # run adds to what the killed ones spent; steps lost to a kill count once, when redone).
    seconds_before = float(log.latest("train_seconds", 0.0)) if step else 0.0
    t_start = t_last = time.perf_counter()
    images, loss_sum = 0, 0.0
    while step < total_steps:
        batch = global_batch(next(train_iter), mesh)
        state, metrics = train_step(state, batch)
        step += 1
        images += config.batch_size
        loss_sum = loss_sum + metrics["loss"]  # stays on the device: no wait per step
        if step % config.log_every == 0 or step == total_steps:
            loss = float(metrics["loss"])  # waits for the device
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at step {step}; lower --learning_rate "
                                         "or set --grad_clip")
            rate = images / (time.perf_counter() - t_last)
            extra = {k: float(v) for k, v in metrics.items() if k not in ("loss", "grad_norm")}
            loss_mean = float(loss_sum) / (images // config.batch_size)
            log.write(step, loss=loss, loss_mean=loss_mean, grad_norm=float(metrics["grad_norm"]),
                      learning_rate=float(schedule(step - 1)), images_per_s=rate,
                      train_seconds=round(seconds_before + time.perf_counter() - t_start, 1), **extra)
            progress.update(step, force=True, rate=rate, loss=loss_mean)
            t_last, images, loss_sum = time.perf_counter(), 0, 0.0
        evaluated = None
        if config.eval_every and step % config.eval_every == 0 and step < total_steps:
            evaluated = evaluate(predict, distributed.local_copy(state["params"]), eval_set, config)
            log.write(step, **{f"eval_{k}": evaluated[k] for k in EVAL_SCALARS})
        if step % config.save_every == 0 or step == total_steps or evaluated is not None:
            checkpoints.save(step, state, train_iter.get_state(), config, metrics=evaluated)

    train_seconds = round(seconds_before + time.perf_counter() - t_start, 1)
    results = evaluate(predict, distributed.local_copy(state["params"]), eval_set, config,
                       out_dir=workdir,
                       extra={"num_params": registry.num_params(state["params"]), "step": step,
                              "train_seconds": train_seconds})
    checkpoints.save(step, state, train_iter.get_state(), config, metrics=results)
    log.write(step, **{f"eval_{k}": results[k] for k in EVAL_SCALARS})
    log.close()
    if distributed.is_primary():
        plots.training_curves(workdir / "log.jsonl", workdir / "training_curves.png")
    return results


def finished_or_train(config: Config, workdir, name: str = "") -> dict:
    """The metrics of `workdir`'s finished run of `config`, or train (resuming) and evaluate it.

    For sweeps and comparisons: rerunning the command after a kill only redoes unfinished runs.
    """
    workdir = Path(workdir)
    name = name or str(workdir)
    total, _ = config.schedule(len(data.open_source(config.train_dir or None, channels=config.channels)),
                               jax.process_count())
    done = read_report(workdir, "training resumes from the newest checkpoint and evaluates again")
    if done is not None and done.get("step") == total and done.get("train_seconds") is not None:
        print(f"{name}: finished earlier, reusing {workdir / 'metrics.json'}", file=sys.stderr)
        return done
    print(f"{name}: training {total} steps in {workdir}", file=sys.stderr)
    return train_and_evaluate(config, workdir)  # its evaluation writes metrics.json


def evaluate_checkpoint(config: Config, workdir, which: str = "latest", noise_levels=()) -> dict:
    """Evaluate `workdir`'s checkpoint on `config`'s test set (the network must be the checkpoint's);
    with `noise_levels`, then also at each of those noise stds (`evaluate_noise_levels`)."""
    config.validate()
    with Checkpoints(workdir) as checkpoints:
        checkpoints.check_compatible(config, which)
        graphdef, params, step = checkpoints.restore_model(which)
    predict, params = make_predict(graphdef, config.bf16, warm_start(config)), distributed.local_copy(params)
    summary = evaluate(predict, params, make_eval_set(config), config, out_dir=Path(workdir),
                       extra={"num_params": registry.num_params(params), "step": step})
    if noise_levels:
        evaluate_noise_levels(predict, params, config, noise_levels, out_dir=Path(workdir))
    return summary
