"""jit-compiled train and predict steps, data-parallel over a 1-D device mesh.

Parallelism: a 1-D mesh over every device (all hosts) with axis "data"; batches are sharded on their
leading axis (`NamedSharding(mesh, P("data"))`), parameters and optimiser state are replicated, and
XLA inserts the gradient all-reduce. The step is `jax.jit` over the split model state
(`nnx.split` / `nnx.merge` inside), which avoids `nnx.jit`'s per-call graph traversal.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from unroll.config import Config
from unroll.models import registry
from unroll.train.distributed import global_batch, make_mesh
from unroll.train.state import init_state, make_optimizer
from unroll.train.tasks import task_of


def compute(graphdef, params, inputs, config: Config):
    """The model (bfloat16 compute if asked: parameters and loss stay float32) and its inputs."""
    if config.bf16:
        params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
        inputs = inputs.astype(jnp.bfloat16)
    return nnx.merge(graphdef, params), inputs


def float32(tree):
    return jax.tree.map(lambda x: x.astype(jnp.float32), tree)


def apply(model, inputs, batch: dict):
    """The model on a batch's inputs, from the batch's initial kernels "h0" when it has them (a
    warm-started MGSTNet trains on perturbed true kernels, `Config.kernel_init="classical"`)."""
    h0 = batch.get("h0")
    return model(inputs) if h0 is None else model(inputs, h0)


def make_train_step(graphdef, config: Config, tx, mesh):
    """jit-compiled `(state, batch) -> (state, metrics)`, batch sharded over the mesh's data axis."""
    task = task_of(config)

    def loss_fn(params, batch):
        model, inputs = compute(graphdef, params, batch["blurred"], config)
        return task.loss(float32(apply(model, inputs, batch)), batch, config)

    def train_step(state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

    if task.adversarial is not None:
        from unroll.train.adversarial import adversarial_step

        train_step = adversarial_step(graphdef, config, tx, task.adversarial)

    replicated, sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(train_step, in_shardings=(replicated, sharded), out_shardings=(replicated, replicated),
                   donate_argnums=0)


def make_predict(graphdef, bf16: bool = False, initial_kernels=None):
    """`(params, blurred [N, H, W, C]) -> model output`, jit-compiled (recompiles per image size).

    `initial_kernels` (`warm_start(config)`): a host function giving (h_0, trusted) for the images,
    passed to the model (MGSTNet's warm start). Give it `distributed.local_copy(params)`: prediction
    runs on one local device per process.
    """
    def predict(params, g, *warm):
        kwargs = {} if not warm else dict(h0=warm[0], trusted=warm[1])
        if bf16:
            params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
            return float32(nnx.merge(graphdef, params)(g.astype(jnp.bfloat16), **kwargs))
        return nnx.merge(graphdef, params)(g, **kwargs)
    predict = jax.jit(predict)
    if initial_kernels is None:
        return predict

    def warm_predict(params, g):
        h0, trusted = initial_kernels(np.asarray(g))
        return predict(params, g, jnp.asarray(h0), jnp.asarray(trusted))
    return warm_predict


# Stage-loop modes of `compile_seconds`: (remat, stage_unroll).
LOOP_MODES = {"scan": (False, 1), "remat": (True, 1), "unrolled": (False, 0)}


def compile_seconds(config: Config, stage_counts, modes=("scan", "remat")) -> list[dict]:
    """[{stages, mode, remat, trace_lower_s, compile_s}]: the train step of `config` at each stage
    count and stage-loop mode (LOOP_MODES: the rolled scan, with per-stage remat, or every stage
    unrolled), timed with JAX's persistent compilation cache off."""
    unknown = [m for m in modes if m not in LOOP_MODES]
    if unknown:
        raise ValueError(f"unknown stage-loop modes {unknown}; known: {', '.join(LOOP_MODES)}")
    mesh = make_mesh()
    zeros = np.zeros((config.batch_size, config.patch_size, config.patch_size, config.channels),
                     np.float32)
    batch = global_batch({"blurred": zeros, "sharp": zeros}, mesh)
    rows = []
    cache = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        for mode in modes:
            remat, stage_unroll = LOOP_MODES[mode]
            for stages in stage_counts:
                c = dataclasses.replace(config, stages=stages, remat=remat, stage_unroll=stage_unroll)
                graphdef, params = registry.build_split(c)
                tx, _ = make_optimizer(c, 10, 10)
                step = make_train_step(graphdef, c, tx, mesh)
                t0 = time.perf_counter()
                lowered = step.lower(init_state(params, tx, mesh), batch)
                t1 = time.perf_counter()
                lowered.compile()
                t2 = time.perf_counter()
                rows.append({"stages": stages, "mode": mode, "remat": remat,
                             "trace_lower_s": round(t1 - t0, 3), "compile_s": round(t2 - t1, 3)})
                print(f"compile: stages {stages} {mode}: {t2 - t0:.1f} s", file=sys.stderr)
    finally:
        jax.config.update("jax_enable_compilation_cache", cache)
    return rows
