"""Compile time of one train step against the stage count, with and without per-stage remat.

    python -m benchmarks.compile [--stages=1,3,6,10] [--config=demo|paper]

Prints JSON: per stage count and mode, the seconds to trace and lower, and to XLA-compile, with JAX's
persistent compilation cache off. The stages are a `lax.scan` over parameters stored stacked (a
checkpointed body with remat), so XLA compiles one stage body and the optimiser update sees one
stage's leaves whatever K: compile time should barely grow with K.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from unroll import train
from unroll.config import Config


def compile_seconds(config: Config, stage_counts, remat_modes=(False, True)) -> list[dict]:
    """[{stages, remat, trace_lower_s, compile_s}] for `config` at each stage count and remat mode."""
    mesh = train.make_mesh()
    zeros = np.zeros((config.batch_size, config.patch_size, config.patch_size, config.channels),
                     np.float32)
    batch = train.global_batch({"blurred": zeros, "sharp": zeros}, mesh)
    rows = []
    cache = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        for remat in remat_modes:
            for stages in stage_counts:
                c = dataclasses.replace(config, stages=stages, remat=remat)
                graphdef, params = train.build_model(c)
                tx, _ = train.make_optimizer(c, 10, 10)
                state = jax.device_put({"params": params, "opt_state": tx.init(params),
                                        "step": jnp.zeros((), jnp.int32)}, NamedSharding(mesh, P()))
                step = train.make_train_step(graphdef, c, tx, mesh)
                t0 = time.perf_counter()
                lowered = step.lower(state, batch)
                t1 = time.perf_counter()
                lowered.compile()
                t2 = time.perf_counter()
                rows.append({"stages": stages, "remat": remat, "trace_lower_s": round(t1 - t0, 3),
                             "compile_s": round(t2 - t1, 3)})
                print(f"compile: stages {stages} remat {remat}: {t2 - t0:.1f} s", file=sys.stderr)
    finally:
        jax.config.update("jax_enable_compilation_cache", cache)
    return rows


def main():
    from benchmarks.train_step import CONFIGS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default="1,3,6,10")
    parser.add_argument("--config", default="demo", choices=sorted(CONFIGS))
    args = parser.parse_args()
    try:
        stages = [int(s) for s in args.stages.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--stages must be comma-separated integers, got {args.stages!r}")
    config = dataclasses.replace(Config(), **CONFIGS[args.config], steps=1)
    rows = compile_seconds(config, stages)
    print(json.dumps({"config": args.config, "compile": rows}, indent=1))


if __name__ == "__main__":
    main()
