"""A short check of the paper configuration on an accelerator (or the CPU, `--quick`): prints JSON.

    bash benchmarks/gpu_check.sh          # PYTHONPATH=. python -m benchmarks.gpu_check

Runs from the source tree on synthetic batches, so it needs neither the data nor grain or dm-pix
(the modules it touches import them lazily): jax, flax, optax, orbax, numpy, scipy, scikit-image,
tifffile and pillow are enough. Figures:
  * `train`: the paper train step (3 stages, 3 scales, 15.2M parameters, 256x256 crops) in float32
    and bfloat16: compile seconds, images/s, achieved GFLOP/s;
  * `memory`: the train step's compiled program with and without per-stage remat: XLA's buffer
    assignment (`memory_analysis`: temporaries and total) and, where the device reports it, the
    device's peak bytes in use after running it;
  * `tiled`: deblurring a synthetic scene in 512x512 tiles with the paper network: megapixels/s.
Sized to finish in about 5 minutes on one H200 (compilation dominates); `--quick` shrinks everything
for a CPU dry run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import jax
import numpy as np

from benchmarks.model import memory
from benchmarks.train_step import CONFIGS, measure, synthetic_batch
from unroll import train
from unroll.config import Config
from unroll.inference.model import Model
from unroll.models import registry


def log(message: str):
    print(f"gpu_check: {message}", file=sys.stderr, flush=True)


def memory_of(config: Config) -> dict:
    mesh = train.make_mesh()
    graphdef, params = registry.build_split(config)
    tx, _ = train.make_optimizer(config, 10, 10)
    state = train.init_state(params, tx, mesh)
    batch = train.global_batch(synthetic_batch(config), mesh)
    compiled = train.make_train_step(graphdef, config, tx, mesh).lower(state, batch).compile()
    stats = memory(compiled)
    device = jax.devices()[0]
    jax.block_until_ready(compiled(state, batch))
    device_stats = device.memory_stats() or {}
    if "peak_bytes_in_use" in device_stats:
        stats["device_peak_bytes_in_use"] = int(device_stats["peak_bytes_in_use"])
    return {k: round(v / 2 ** 30, 3) for k, v in stats.items()} | {"unit": "GiB"}


def tiled_rate(config: Config, size: int, tile: int) -> dict:
    model = Model(config, *registry.build_split(config))
    rng = np.random.default_rng(0)
    scene = rng.random((size, size, config.channels), dtype=np.float32)
    model.deblur(scene[:tile, :tile])  # compile the tile shape
    t0 = time.perf_counter()
    restored, kernels = model.deblur(scene, tile_size=tile, tile_overlap=32)
    seconds = time.perf_counter() - t0
    return {"size": size, "tile": tile, "tiles": int(np.prod(kernels.shape[:2])),
            "seconds": round(seconds, 2), "megapixels_per_s": round(size * size / 1e6 / seconds, 3)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="paper train step batch (global)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scene", type=int, default=4096, help="tiled deblurring: scene side")
    parser.add_argument("--quick", action="store_true", help="demo sizes: a CPU dry run")
    args = parser.parse_args(argv)
    name = "demo" if args.quick else "paper"
    base = dataclasses.replace(Config(), **CONFIGS[name], steps=1)
    base = dataclasses.replace(base, batch_size=2 if args.quick else args.batch)
    scene, tile = (256, 128) if args.quick else (args.scene, 512)
    devices = jax.devices()
    result = {"platform": devices[0].platform, "device": str(devices[0].device_kind),
              "devices": len(devices), "jax": jax.__version__, "config": name,
              "batch": base.batch_size}
    t0 = time.perf_counter()
    result["train"] = {}
    for precision, bf16 in (("float32", False), ("bfloat16", True)):
        log(f"train step {name} {precision}")
        result["train"][precision] = measure(dataclasses.replace(base, bf16=bf16), args.repeats)
    result["memory"] = {}
    for remat in (False, True):
        log(f"memory remat={remat}")
        result["memory"]["remat" if remat else "no_remat"] = memory_of(dataclasses.replace(base, remat=remat))
    log(f"tiled deblurring {scene}x{scene}")
    result["tiled"] = tiled_rate(base, scene, tile)
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
