"""MGSTNet speed and memory: parameters, compile and run times, and the backward pass's memory.

    python -m benchmarks.model [--size=256 --batch=1 --stages=3 --scales=3 --kernel_rcabs=2
                                --image_rcabs=2 --features=64 --kernel_features=32
                                --memory_stages=3,6 --repeats=3]
    python -m benchmarks.model --size=32 --features=8 --kernel_features=4 --kernel_size=7 --repeats=2

Prints one JSON object:
  * `params`: parameter count;
  * `forward` / `forward_backward`: compile seconds (lower + compile) and median wall seconds per
    call after compilation, for the image only (forward) and for eq. (21)'s loss and its gradient
    with respect to every parameter (forward_backward);
  * `memory`: for each stage count in --memory_stages, the rolled stage scan with and without
    `remat` and the stages unrolled (`stage_unroll=0`), XLA's buffer assignment for the compiled
    gradient function (`compiled.memory_analysis()`: arguments, outputs, temporaries; nothing is
    run). `temp_bytes` is what rematerialisation bounds.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from unroll import hostmem, kernels, losses, ops
from unroll.models import MGSTNet


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=256, help="image height and width")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--stages", type=int, default=3, help="stages of the timed model")
    p.add_argument("--scales", type=int, default=3)
    p.add_argument("--kernel_rcabs", type=int, default=2)
    p.add_argument("--image_rcabs", type=int, default=2)
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--kernel_features", type=int, default=32)
    p.add_argument("--kernel_size", type=int, default=15)
    p.add_argument("--repeats", type=int, default=3, help="timed calls after compilation")
    p.add_argument("--memory_stages", default="3,6",
                   help="comma-separated stage counts for the memory analysis ('' to skip)")
    args = p.parse_args(argv)
    try:
        args.memory_stages = [int(s) for s in args.memory_stages.split(",") if s.strip()]
    except ValueError:
        p.error(f"--memory_stages must be comma-separated integers, got {args.memory_stages!r}")
    for name in ("size", "batch", "channels", "stages", "scales", "features", "kernel_features",
                 "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.kernel_size % 2 == 0 or not 1 <= args.kernel_size <= args.size:
        p.error("--kernel_size must be odd and at most --size")
    if any(s < 1 for s in args.memory_stages):
        p.error("--memory_stages must be positive")
    return args


def model_config(args, **overrides) -> dict:
    config = dict(stages=args.stages, scales=args.scales, kernel_rcabs=args.kernel_rcabs,
                  image_rcabs=args.image_rcabs, channels=args.channels, features=args.features,
                  kernel_features=args.kernel_features, kernel_size=args.kernel_size)
    return {**config, **overrides}


def synthetic_batch(args):
    """Random sharp images blurred by Gaussians (the content does not change the timings)."""
    rng = np.random.default_rng(0)
    sharp = rng.random((args.batch, args.size, args.size, args.channels)).astype(np.float32)
    h = np.stack([kernels.gaussian(args.kernel_size, 1.0 + i % 3) for i in range(args.batch)])
    return jnp.asarray(sharp), ops.blur(jnp.asarray(sharp), jnp.asarray(h))


def grad_function(graphdef):
    """(params, sharp, blurred) -> (loss, grads) for eq. (21)."""
    def loss(params, sharp, blurred):
        return losses.mgstnet_loss(nnx.merge(graphdef, params)(blurred), sharp, blurred)

    return jax.jit(jax.value_and_grad(loss))


def compile_timed(jitted, *args):
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def run_timed(compiled, *args, repeats: int) -> float:
    jax.block_until_ready(compiled(*args))  # warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def memory(compiled) -> dict:
    m = compiled.memory_analysis()
    stats = {
        "argument_bytes": int(m.argument_size_in_bytes),
        "output_bytes": int(m.output_size_in_bytes),
        "alias_bytes": int(m.alias_size_in_bytes),
        "temp_bytes": int(m.temp_size_in_bytes),
    }
    # Everything live at once in the worst case (XLA's CPU client does not always fill peak_memory).
    stats["total_bytes"] = (stats["argument_bytes"] + stats["output_bytes"] + stats["temp_bytes"]
                            - stats["alias_bytes"])
    peak = getattr(m, "peak_memory_in_bytes", 0)
    if peak:
        stats["peak_bytes"] = int(peak)
    return stats


def main(argv=None):
    args = parse_args(argv)
    sharp, blurred = synthetic_batch(args)
    result = {"backend": jax.default_backend(), "devices": jax.device_count(),
              "image": list(blurred.shape), "config": model_config(args)}

    t0 = time.perf_counter()
    model = MGSTNet(**model_config(args))
    result["init_seconds"] = time.perf_counter() - t0
    graphdef, params = nnx.split(model, nnx.Param)
    result["params"] = int(sum(x.size for x in jax.tree.leaves(params)))

    forward = jax.jit(lambda p, g: nnx.merge(graphdef, p)(g).images[-1])
    compiled, seconds = compile_timed(forward, params, blurred)
    result["forward"] = {"compile_seconds": seconds,
                         "seconds": run_timed(compiled, params, blurred, repeats=args.repeats)}
    del compiled

    compiled, seconds = compile_timed(grad_function(graphdef), params, sharp, blurred)
    result["forward_backward"] = {
        "compile_seconds": seconds,
        "seconds": run_timed(compiled, params, sharp, blurred, repeats=args.repeats)}
    del compiled, model, params

    result["memory"] = {}
    for stages in args.memory_stages:
        # The rolled stage scan without and with remat, and every stage unrolled.
        for key, remat, stage_unroll in (("remat=False", False, 1), ("remat=True", True, 1),
                                         ("unrolled", False, 0)):
            kwargs = model_config(args, stages=stages, remat=remat, stage_unroll=stage_unroll)
            abstract = nnx.eval_shape(lambda kwargs=kwargs: MGSTNet(**kwargs))
            gd, abstract_params = nnx.split(abstract, nnx.Param)
            compiled, seconds = compile_timed(grad_function(gd), abstract_params, sharp, blurred)
            result["memory"][f"stages={stages},{key}"] = {
                **memory(compiled), "compile_seconds": seconds}
            del compiled
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    hostmem.configure()  # reuse XLA:CPU's per-step buffers (unroll/hostmem.py)
    main()
