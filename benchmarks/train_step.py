"""Train-step throughput and compile time of the trainer's jitted, sharded step.

    python -m benchmarks.train_step [--configs=demo,shipped,paper] [--paper_batch=1] [--repeats=3]
        [--models=mgstnet,madn,idc,mtwdn] [--conv_grad=custom|xla] [--stage_unroll=N] [--remat] [--bf16]
        [--gst_solver=fixed_point|halley] [--gst_grad=unrolled|implicit]

MGSTNet's stages run unrolled (--stage_unroll=0, as CPU training does) unless --remat or
--stage_unroll=1 asks for the rolled scan.

Prints one JSON object with, per configuration: batch shape, parameter count, compile seconds,
images per second (median step time over `repeats`, after compilation) and the achieved GFLOP/s (XLA's
FLOP count of the compiled step over its time), and the minor page faults and kernel (system)
CPU-seconds per step;
`host_memory_tuned` says whether unroll.hostmem.configure() ran (UNROLL_MALLOC_TUNING=0: it does
not). "demo" is
experiments/flags/demo.flags; "paper" is the paper's network (3 stages, 3 scales, 2+2 RCABs, 64
features) on 256x256 crops.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from unroll import hostmem, kernels, ops, train
from unroll.config import Config
from unroll.models import blocks, registry
from unroll.models.mgstnet import GST_GRADS, GST_SOLVERS

CONFIGS = {
    "demo": dict(stages=2, scales=2, kernel_rcabs=1, image_rcabs=1, features=16, kernel_features=8,
                 kernel_size=15, patch_size=64, batch_size=8),
    # The network, kernel, patch and batch of experiments/flags/motion.flags (the shipped `motion`).
    "shipped": dict(stages=2, scales=2, kernel_rcabs=1, image_rcabs=1, features=16, kernel_features=8,
                    kernel_size=31, patch_size=96, batch_size=8),
    "paper": dict(stages=3, scales=3, kernel_rcabs=2, image_rcabs=2, features=64, kernel_features=32,
                  kernel_size=15, patch_size=256, batch_size=1),
}


def cpu_stage_unroll(stage_unroll: int | None, remat: bool) -> int:
    """The stage loop the CPU benchmarks time: `stage_unroll` if given, else every stage unrolled
    (what CPU training uses, experiments/flags/demo.flags), or the rolled scan that remat needs."""
    if stage_unroll is not None:
        return stage_unroll
    return 1 if remat else 0


def synthetic_batch(config: Config, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    shape = (config.batch_size, config.patch_size, config.patch_size, config.channels)
    sharp = rng.random(shape).astype(np.float32)
    h = np.stack([kernels.gaussian(config.kernel_size, 1.0 + i % 3) for i in range(config.batch_size)])
    blurred = np.asarray(ops.blur(jnp.asarray(sharp), jnp.asarray(h)))
    return {"blurred": blurred, "sharp": sharp, "kernel": h}


def _xla_flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0)) if cost else 0.0


def _step_flops(config: Config, compiled, tx, mesh, batch) -> float:
    """FLOPs of one train step (forward, backward, Adam) by XLA's cost analysis. XLA counts a loop
    body once, and MGSTNet's stages are a scan: count a one-stage network (no loop) and multiply by
    the stage count (this counts the loss and the optimiser K times too, a small overcount)."""
    if config.model != "mgstnet" or config.stages == 1:  # no loop: the step itself counts
        return _xla_flops(compiled)
    one = dataclasses.replace(config, stages=1)
    graphdef, params = registry.build_split(one)
    state = train.init_state(params, tx, mesh)
    lowered = train.make_train_step(graphdef, one, tx, mesh).lower(state, batch)
    return _xla_flops(lowered.compile()) * config.stages


def build_step(config: Config):
    """(step, state, batch, tx, mesh): the trainer's jitted, sharded step of `config`'s network on
    the synthetic batch, with a fresh training state (not yet compiled)."""
    mesh = train.make_mesh()
    graphdef, params = registry.build_split(config)
    tx, _ = train.make_optimizer(config, 1000, 800)
    state = train.init_state(params, tx, mesh)
    step = train.make_train_step(graphdef, config, tx, mesh)
    return step, state, train.global_batch(synthetic_batch(config), mesh), tx, mesh


def measure(config: Config, repeats: int) -> dict:
    step, state, batch, tx, mesh = build_step(config)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    flops = _step_flops(config, compiled, tx, mesh, batch)
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times = []
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    after = resource.getrusage(resource.RUSAGE_SELF)
    faults = (after.ru_minflt - before.ru_minflt) / repeats
    system_s = (after.ru_stime - before.ru_stime) / repeats
    step_s = float(np.median(times))
    return {"batch_shape": list(batch["blurred"].shape), "num_params": registry.num_params(state["params"]),
            "compile_s": round(compile_s, 2), "step_s": round(step_s, 4),
            "images_per_s": round(config.batch_size / step_s, 3), "gflop_per_step": round(flops / 1e9, 2),
            "gflop_per_s": round(flops / 1e9 / step_s, 2), "remat": config.remat,
            "stage_unroll": config.stage_unroll, "bf16": config.bf16,
            "gst_solver": config.gst_solver, "gst_grad": config.gst_grad,
            "page_faults_per_step": round(faults), "system_s_per_step": round(system_s, 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="demo,paper")
    parser.add_argument("--paper_batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--remat", action="store_true")
    parser.add_argument("--stage_unroll", type=int, default=None,
                        help="MGSTNet stages per iteration of the stage loop, 0 for all (no loop); "
                             "default: 0, or 1 with --remat")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--models", default="mgstnet",
                        help="networks to time at each configuration's size (mgstnet, madn, idc, mtwdn)")
    parser.add_argument("--conv_grad", choices=("custom", "xla"), default="custom",
                        help="CPU convolution gradients: the project's custom VJP, or JAX's own rules")
    parser.add_argument("--gst_solver", choices=GST_SOLVERS, default=Config.gst_solver)
    parser.add_argument("--gst_grad", choices=GST_GRADS, default=Config.gst_grad)
    args = parser.parse_args()
    if args.conv_grad == "xla":
        blocks._custom_vjp_backend = lambda: False  # what other backends get
    results = {"devices": jax.device_count(), "platform": jax.devices()[0].platform,
               "host_memory_tuned": not jax.config.read("jax_cpu_enable_async_dispatch")}
    for name in args.configs.split(","):
        for model in args.models.split(","):
            overrides = dict(CONFIGS[name], model=model, remat=args.remat, bf16=args.bf16, steps=1,
                             stage_unroll=cpu_stage_unroll(args.stage_unroll, args.remat),
                             gst_solver=args.gst_solver, gst_grad=args.gst_grad)
            if name == "paper":
                overrides["batch_size"] = args.paper_batch
            key = name if args.models == "mgstnet" else f"{name}/{model}"
            results[key] = measure(dataclasses.replace(Config(), **overrides), args.repeats)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    hostmem.configure()  # reuse XLA:CPU's per-step buffers (unroll/hostmem.py)
    main()
