"""The one trainer: jit-compiled, data-parallel train steps, checkpoints and evaluation.

Parallelism: a 1-D mesh over every device (all hosts) with axis "data"; batches are sharded on their
leading axis (`NamedSharding(mesh, P("data"))`), parameters and optimiser state are replicated, and
XLA inserts the gradient all-reduce. Each process feeds its own slice of the global batch
(`jax.make_array_from_process_local_data`). The step is `jax.jit` over the split model state
(`nnx.split` / `nnx.merge` inside), which avoids `nnx.jit`'s per-call graph traversal.

A model plugs in as a `Task`: how to build it from the configuration, its loss, and how to read the
restored image and kernel from its output. MGSTNet is the first; the CNN baselines add theirs. A GAN
(MADN) adds an `Adversarial` part: its discriminator is the model's `discriminator` attribute, and each
train step updates the discriminator, then the generator against the updated discriminator, each with
its own Adam.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from unroll import data, distributed, losses, plots
from unroll.checkpoint import CheckpointError, Checkpoints
from unroll.config import Config, ConfigError
from unroll.evaluation import evaluate


# ----------------------------------------------------------------------------------------------------
# Models as tasks.


@dataclasses.dataclass(frozen=True)
class Adversarial:
    """The GAN part of a task: the discriminator's logits on real and generated data (the model's
    methods decide what is judged, e.g. images and gradient maps), the two losses, and the
    discriminator's learning rate as a multiple of the generator's (`Config.learning_rate`)."""
    real_logits: Callable[[nnx.Module, dict], Any]  # (model, batch) -> D(real)
    fake_logits: Callable[[nnx.Module, Any], Any]  # (model, output) -> D(fake)
    generator_loss: Callable[[Any, dict, Any, Config], jax.Array]  # (out, batch, D(fake), config)
    discriminator_loss: Callable[[Any, Any], jax.Array]  # (D(real), D(fake))
    discriminator_lr_ratio: float = 1.0


@dataclasses.dataclass(frozen=True)
class Task:
    build: Callable[[Config, nnx.Rngs], nnx.Module]
    loss: Callable[[Any, dict, Config], jax.Array]  # (model output, batch, config) -> scalar
    image: Callable[[Any], jax.Array]  # output -> restored images [N, H, W, C]
    kernel: Callable[[Any], jax.Array | None]  # output -> estimated kernels [N, k, k] or None
    stage_images: Callable[[Any], tuple]  # output -> intermediate images, for the sample grids
    adversarial: Adversarial | None = None
    clip_value: float = 0.0  # the paper's elementwise gradient clipping (0: none)
    interpretable: bool = False  # every layer is a step of an optimisation algorithm (Table VI)
    estimates_kernel: bool = False


def _build_mgstnet(config: Config, rngs: nnx.Rngs):
    from unroll.models import MGSTNet

    return MGSTNet(stages=config.stages, scales=config.scales, kernel_rcabs=config.kernel_rcabs,
                   image_rcabs=config.image_rcabs, channels=config.channels,
                   kernel_size=config.kernel_size, features=config.features,
                   kernel_features=config.kernel_features, boundary=config.boundary,
                   threshold=config.threshold, kernel_prox=config.kernel_prox, remat=config.remat,
                   rngs=rngs)


def _build_baseline(name: str):
    def build(config: Config, rngs: nnx.Rngs):
        from unroll import models

        return getattr(models, name)(channels=config.channels, features=config.features,
                                     scales=config.scales, rngs=rngs)
    return build


def _full_size(images) -> tuple:
    """The multi-scale outputs at the input's size (the sample grids compare them with the sharp image)."""
    return tuple(u for u in images if u.shape == images[-1].shape)


def _cnn_task(name: str, loss, **kwargs) -> Task:
    return Task(build=_build_baseline(name), loss=loss, image=lambda out: out.images[-1],
                kernel=lambda out: None, stage_images=lambda out: _full_size(out.images), **kwargs)


TASKS = {
    "mgstnet": Task(
        build=_build_mgstnet,
        loss=lambda out, batch, c: losses.mgstnet_loss(out, batch["sharp"], batch["blurred"],
                                                       alpha=c.alpha, boundary=c.boundary),
        image=lambda out: out.images[-1],
        kernel=lambda out: out.kernels[-1],
        stage_images=lambda out: out.images,
        interpretable=True,
        estimates_kernel=True,
    ),
    # The CNN baselines (papers/madn.txt, idc.txt, mtwdn.txt): multi-scale outputs, coarse to fine.
    # MADN (Section 5.1): Adam 1e-4 for G and 4e-4 for D, gradients clipped at 2; `loss` is the
    # content part of eq. (10) alone (no discriminator), for studies outside the GAN step.
    "madn": _cnn_task(
        "MADN",
        loss=lambda out, batch, c: losses.madn_generator_loss(out, batch["sharp"], ()),
        adversarial=Adversarial(
            real_logits=lambda model, batch: model.real_logits(batch["sharp"]),
            fake_logits=lambda model, out: model.fake_logits(out),
            generator_loss=lambda out, batch, d_fake, c: losses.madn_generator_loss(
                out, batch["sharp"], d_fake),
            discriminator_loss=losses.madn_discriminator_loss,
            discriminator_lr_ratio=4.0),
        clip_value=2.0),
    "idc": _cnn_task("IDC", loss=lambda out, batch, c: losses.idc_loss(out, batch["sharp"])),
    "mtwdn": _cnn_task("MTWDN", loss=lambda out, batch, c: losses.mtwdn_loss(out, batch["sharp"])),
}


def split_discriminator(params):
    """(discriminator parameters, everything else) of a GAN's parameter state."""
    return nnx.split_state(params, nnx.PathContains("discriminator"), ...)


def build_model(config: Config):
    """The model of `config`, its graph definition and parameters (initialised from `config.seed`)."""
    model = TASKS[config.model].build(config, nnx.Rngs(config.seed))
    graphdef, params = nnx.split(model)
    return graphdef, params


def num_params(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


# ----------------------------------------------------------------------------------------------------
# Steps.


@dataclasses.dataclass(frozen=True)
class AdversarialTx:
    """One optimiser for the generator and one for the discriminator (`init` like optax's)."""
    generator: optax.GradientTransformation
    discriminator: optax.GradientTransformation

    def init(self, params):
        d_params, g_params = split_discriminator(params)
        return {"generator": self.generator.init(g_params),
                "discriminator": self.discriminator.init(d_params)}


def _adam(config: Config, schedule):
    clips = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip else []
    clip_value = TASKS[config.model].clip_value
    clips += [optax.clip(clip_value)] if clip_value else []
    return optax.chain(*clips, optax.adam(schedule)) if clips else optax.adam(schedule)


def make_optimizer(config: Config, total_steps: int, drop_step: int):
    """Adam with the paper's piecewise-constant schedule (and clipping); a pair for GANs."""
    schedule = optax.piecewise_constant_schedule(
        config.learning_rate,
        {drop_step: config.final_learning_rate / config.learning_rate} if drop_step < total_steps else {})
    adversarial = TASKS[config.model].adversarial
    if adversarial is None:
        return _adam(config, schedule), schedule
    ratio = adversarial.discriminator_lr_ratio
    return AdversarialTx(_adam(config, schedule),
                         _adam(config, lambda step: ratio * schedule(step))), schedule


def _compute(graphdef, params, inputs, config: Config):
    """The model (bfloat16 compute if asked: parameters and loss stay float32) and its inputs."""
    if config.bf16:
        params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
        inputs = inputs.astype(jnp.bfloat16)
    return nnx.merge(graphdef, params), inputs


def _float32(tree):
    return jax.tree.map(lambda x: x.astype(jnp.float32), tree)


def make_train_step(graphdef, config: Config, tx, mesh):
    """jit-compiled `(state, batch) -> (state, metrics)`, batch sharded over the mesh's data axis."""
    task = TASKS[config.model]

    def loss_fn(params, batch):
        model, inputs = _compute(graphdef, params, batch["blurred"], config)
        return task.loss(_float32(model(inputs)), batch, config)

    def train_step(state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

    if task.adversarial is not None:
        train_step = _adversarial_step(graphdef, config, tx, task)

    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(train_step, in_shardings=(replicated, sharded), out_shardings=(replicated, replicated),
                   donate_argnums=0)


def _adversarial_step(graphdef, config: Config, tx: AdversarialTx, task: Task):
    """Alternating GAN update: the discriminator on (real, generated), then the generator against the
    updated discriminator. The generator runs forward once: its vjp is kept for the second update."""
    adversarial = task.adversarial

    def judge(g_params, d_params, logits_fn, x):
        params = nnx.merge_state(g_params, d_params)
        if config.bf16:
            params, x = jax.tree.map(lambda a: a.astype(jnp.bfloat16), (params, x))
        return _float32(logits_fn(nnx.merge(graphdef, params), x))

    def train_step(state, batch):
        d_params, g_params = split_discriminator(state["params"])

        def generate(g):
            model, inputs = _compute(graphdef, nnx.merge_state(g, d_params), batch["blurred"], config)
            return _float32(model(inputs))

        out, pullback = jax.vjp(generate, g_params)
        fake = jax.lax.stop_gradient(out)

        def d_loss_fn(d):
            return adversarial.discriminator_loss(judge(g_params, d, adversarial.real_logits, batch),
                                                  judge(g_params, d, adversarial.fake_logits, fake))

        d_loss, d_grads = jax.value_and_grad(d_loss_fn)(d_params)
        d_updates, d_opt = tx.discriminator.update(d_grads, state["opt_state"]["discriminator"], d_params)
        d_params = optax.apply_updates(d_params, d_updates)

        def g_loss_fn(out):
            d_fake = judge(g_params, d_params, adversarial.fake_logits, out)
            return adversarial.generator_loss(out, batch, d_fake, config)

        g_loss, out_grads = jax.value_and_grad(g_loss_fn)(out)
        (g_grads,) = pullback(out_grads)
        g_updates, g_opt = tx.generator.update(g_grads, state["opt_state"]["generator"], g_params)
        g_params = optax.apply_updates(g_params, g_updates)
        metrics = {"loss": g_loss, "discriminator_loss": d_loss, "grad_norm": optax.tree.norm(g_grads)}
        return {"params": nnx.merge_state(g_params, d_params),
                "opt_state": {"generator": g_opt, "discriminator": d_opt},
                "step": state["step"] + 1}, metrics

    return train_step

    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(train_step, in_shardings=(replicated, sharded), out_shardings=(replicated, replicated),
                   donate_argnums=0)


def make_predict(graphdef, bf16: bool = False):
    """jit-compiled `(params, blurred [N, H, W, C]) -> model output` (recompiles per image size).

    Give it `distributed.local_copy(params)`: prediction runs on one local device per process.
    """
    def predict(params, g):
        if bf16:
            params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
            return _float32(nnx.merge(graphdef, params)(g.astype(jnp.bfloat16)))
        return nnx.merge(graphdef, params)(g)
    return jax.jit(predict)


def make_mesh(devices=None):
    """1-D mesh "data" over `devices` (default: every device of every process).

    Auto axis type: the model code stays sharding-agnostic and XLA propagates the batch sharding.
    """
    devices = jax.devices() if devices is None else devices
    return jax.make_mesh((len(devices),), ("data",), devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,))


def global_batch(batch: dict, mesh) -> dict:
    """Host-local numpy batch -> global arrays sharded on the batch axis."""
    sharding = NamedSharding(mesh, P("data"))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in batch.items() if isinstance(v, np.ndarray)}


# ----------------------------------------------------------------------------------------------------
# Logging.


class Progress:
    """A one-line progress bar on stderr (a TTY) or a line per log interval (files, CI)."""

    def __init__(self, total: int, start: int, stream=None):
        # Looked up per call, not at import: tests and tools may swap sys.stderr in between.
        stream = sys.stderr if stream is None else stream
        self.total, self.start, self.stream = total, start, stream
        self.t0 = time.perf_counter()
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def update(self, step: int, loss: float, images_per_s: float, force: bool = False):
        done = step - self.start
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / max(done, 1) * (self.total - step)
        width = 24
        filled = int(width * step / max(self.total, 1))
        line = (f"[{'#' * filled}{'.' * (width - filled)}] step {step}/{self.total} "
                f"loss {loss:.4f} {images_per_s:.1f} img/s ETA {_hms(eta)}")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if step >= self.total else ""))
        elif force:
            self.stream.write(line + "\n")
        self.stream.flush()


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ScalarLog:
    """Scalars to `DIR/log.jsonl` (appended across resumes) and TensorBoard when tensorboardX exists."""

    def __init__(self, workdir: Path):
        self.path = workdir / "log.jsonl"
        self.writer = None
        if jax.process_index() == 0:
            try:
                from tensorboardX import SummaryWriter
                self.writer = SummaryWriter(str(workdir / "tensorboard"))
            except ImportError:
                pass

    def write(self, step: int, **scalars):
        if jax.process_index() != 0:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **scalars}) + "\n")
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, step)

    def close(self):
        if self.writer is not None:
            self.writer.close()


# ----------------------------------------------------------------------------------------------------
# Train and evaluate.


def train_and_evaluate(config: Config, workdir) -> dict:
    """Train (resuming from `workdir`'s newest checkpoint), then evaluate; returns the metrics."""
    config.validate()
    workdir = Path(workdir)
    # Everything that can fail on user input is checked before anything is written to workdir.
    source = data.open_source(config.train_dir or None, channels=config.channels, split="train")
    eval_set = make_eval_set(config)
    mesh = make_mesh()
    if config.batch_size % mesh.size:
        raise ConfigError(f"--batch_size={config.batch_size} is not divisible by the {mesh.size} devices")
    with Checkpoints(workdir, keep=config.keep) as checkpoints:
        checkpoints.check_compatible(config)
        return _train(config, workdir, source, eval_set, mesh, checkpoints)


def _train(config, workdir, source, eval_set, mesh, checkpoints) -> dict:
    total_steps, drop_step = config.schedule(len(source), jax.process_count())
    train_iter = iter(data.make_train_dataset(
        source, patch_size=config.patch_size, batch_size=config.batch_size,
        sigma_range=(config.sigma_min, config.sigma_max), kernel_size=config.kernel_size,
        noise=config.noise, motion_prob=config.motion_prob, seed=config.seed,
        channels=config.channels, num_workers=config.num_workers))
    graphdef, params = build_model(config)
    tx, schedule = make_optimizer(config, total_steps, drop_step)
    state = jax.device_put({"params": params, "opt_state": tx.init(params),
                            "step": jnp.zeros((), jnp.int32)}, NamedSharding(mesh, P()))
    restored = checkpoints.restore(state)
    if restored is not None:
        step, state, data_state = restored
        train_iter.set_state(data_state)
        print(f"resuming from step {step} in {checkpoints.root}", file=sys.stderr)
    workdir.mkdir(parents=True, exist_ok=True)
    if distributed.is_primary():
        (workdir / "config.json").write_text(json.dumps(config.to_dict(), indent=1))

    task = TASKS[config.model]
    train_step = make_train_step(graphdef, config, tx, mesh)
    predict = make_predict(graphdef, config.bf16)
    log = ScalarLog(workdir)
    step = int(state["step"])
    progress = Progress(total_steps, step)
    t_last, images = time.perf_counter(), 0
    while step < total_steps:
        batch = global_batch(next(train_iter), mesh)
        state, metrics = train_step(state, batch)
        step += 1
        images += config.batch_size
        if step % config.log_every == 0 or step == total_steps:
            loss = float(metrics["loss"])  # waits for the device
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at step {step}; lower --learning_rate "
                                         "or set --grad_clip")
            rate = images / (time.perf_counter() - t_last)
            extra = {k: float(v) for k, v in metrics.items() if k not in ("loss", "grad_norm")}
            log.write(step, loss=loss, grad_norm=float(metrics["grad_norm"]),
                      learning_rate=float(schedule(step - 1)), images_per_s=rate, **extra)
            progress.update(step, loss, rate, force=True)
            t_last, images = time.perf_counter(), 0
        evaluated = None
        if config.eval_every and step % config.eval_every == 0 and step < total_steps:
            evaluated = evaluate(predict, distributed.local_copy(state["params"]), eval_set, config,
                                 task)
            log.write(step, **{f"eval_{k}": evaluated[k] for k in ("psnr", "ssim", "rmse")})
        if step % config.save_every == 0 or step == total_steps or evaluated is not None:
            checkpoints.save(step, state, train_iter.get_state(), config, metrics=evaluated)

    results = evaluate(predict, distributed.local_copy(state["params"]), eval_set, config, task,
                       out_dir=workdir, extra={"num_params": num_params(state["params"]), "step": step})
    checkpoints.save(step, state, train_iter.get_state(), config, metrics=results)
    log.write(step, **{f"eval_{k}": results[k] for k in ("psnr", "ssim", "rmse")})
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
    metrics_path = workdir / "metrics.json"
    total, _ = config.schedule(len(data.open_source(config.train_dir or None, channels=config.channels)),
                               jax.process_count())
    if metrics_path.exists():
        done = json.loads(metrics_path.read_text())
        if done.get("step") == total and done.get("train_seconds") is not None:
            print(f"{name}: finished earlier, reusing {metrics_path}", file=sys.stderr)
            return done
    print(f"{name}: training {total} steps in {workdir}", file=sys.stderr)
    t0 = time.perf_counter()
    results = train_and_evaluate(config, workdir)
    results["train_seconds"] = round(time.perf_counter() - t0, 1)
    if distributed.is_primary():
        metrics_path.write_text(json.dumps(results, indent=1))
    return results


def make_eval_set(config: Config):
    return data.make_eval_dataset(
        config.test_dir or None, kernel_size=config.kernel_size,
        sigma_range=(config.sigma_min, config.sigma_max), noise=config.noise,
        motion_prob=config.motion_prob, seed=config.seed, channels=config.channels,
        center_crop=config.eval_crop or None)


def restore_params(config: Config, workdir, which: str = "latest"):
    """Graph definition, parameters and step of `workdir`'s checkpoint, checked against `config`."""
    with Checkpoints(workdir) as checkpoints:
        saved = checkpoints.saved_config(which)
        if saved is None:
            raise CheckpointError(f"no {which} checkpoint in {workdir}: train there first (--mode=train)")
        checkpoints.check_compatible(config, which)
        graphdef, params = build_model(saved)
        total, drop = saved.schedule(1)
        tx, _ = make_optimizer(saved, max(total, 1), drop)
        template = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
        step, state, _ = checkpoints.restore(template, which)
    return graphdef, state["params"], step


def evaluate_checkpoint(config: Config, workdir, which: str = "latest") -> dict:
    config.validate()
    graphdef, params, step = restore_params(config, workdir, which)
    return evaluate(make_predict(graphdef, config.bf16), distributed.local_copy(params),
                    make_eval_set(config), config, TASKS[config.model],
                    out_dir=Path(workdir), extra={"num_params": num_params(params), "step": step})
