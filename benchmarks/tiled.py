"""Tiled deblurring of large scenes: time and memory against the scene size.

    python -m benchmarks.tiled [--sizes=1024,4096 --tile=256 --overlap=32 --global_kernel]
    python -m benchmarks.tiled --model=aerial --sizes=2048 --tile=512 --whole

A scene of each size is the built-in "astronaut" photograph mirrored out to size x size and blurred
with a 15x15 Gaussian (sigma 2, `unroll.data.blur_host` applied in row strips so that making the
scene needs little memory). A small MGSTNet (the demo configuration, random initialisation: speed
does not depend on the weights), or with `--model=NAME` a shipped model (`unroll.load`), deblurs it
in tiles (`unroll.inference.model.Model`). `first_call_s` is the first tiled call on a fresh model
(compilation included); every timed run has its tile shape compiled before (a warm-up call where
its fitted tile side is new). With `--whole` each size is also deblurred whole, after its own
warm-up call, and `tiled_over_whole` is the ratio of their seconds per megapixel (the process's
peak RSS then includes the whole-image runs of the smaller sizes).

Prints one JSON object: the first call's latency and the XLA temporary memory of a `--tile` forward
pass (which bounds the model's memory whatever the scene size: fitted tiles are never larger), and
per size: the tile side deblur actually runs (`tiling.fit_tile`), seconds, seconds per megapixel
and per tile (flat when tiling works: the per-megapixel figure also carries the tile-overlap overhead,
`processed_pixel_ratio`), process CPU seconds per megapixel (steadier than wall time on a shared
machine), the host arrays' peak (tracemalloc, numpy allocations) and the process's
peak RSS so far (`ru_maxrss`, monotone: sizes run in increasing order), and what a whole-image pass
would need (`unroll.inference.deblur.forward_bytes`).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np

import unroll
from unroll import data, hostmem, kernels
from unroll.config import Config
from unroll.inference import deblur, tiling
from unroll.inference.model import Model
from unroll.models import registry

DEMO_MODEL = dict(stages=2, scales=2, kernel_rcabs=1, image_rcabs=1, features=16,
                  kernel_features=8, kernel_size=15, channels=3)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1024,4096", help="comma-separated scene sizes (pixels)")
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--sigma", type=float, default=2.0, help="Gaussian blur of the scene")
    p.add_argument("--global_kernel", action="store_true", help="one kernel for the whole scene")
    p.add_argument("--features", type=int, default=DEMO_MODEL["features"])
    p.add_argument("--model", default="", help="a shipped model's name (unroll.load); empty: the "
                                               "demo network, randomly initialised")
    p.add_argument("--whole", action="store_true", help="also time whole-image deblurring")
    p.add_argument("--progress", action="store_true", help="show the tile progress bar")
    args = p.parse_args(argv)
    try:
        args.sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    except ValueError:
        p.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if not args.sizes or min(args.sizes) < DEMO_MODEL["kernel_size"]:
        p.error(f"--sizes must be at least the kernel size {DEMO_MODEL['kernel_size']}")
    try:
        tiling.check_tiling(args.tile, args.overlap)
    except ValueError as exc:
        p.error(str(exc))
    return args


def blur_in_strips(image: np.ndarray, kernel: np.ndarray, rows: int = 512) -> np.ndarray:
    """`data.blur_host(image, kernel)` computed on row strips with a kernel-radius margin: the same
    result up to FFT rounding (the margins hold the real neighbouring rows, the image edges are
    padded alike) with FFT buffers the size of a strip, not of the scene."""
    radius = kernel.shape[0] // 2
    out = np.empty(image.shape, np.float32)
    for top in range(0, image.shape[0], rows):
        lo, hi = max(0, top - radius), min(image.shape[0], top + rows + radius)
        strip = data.blur_host(image[lo:hi], kernel)
        out[top:top + rows] = strip[top - lo:top - lo + min(rows, image.shape[0] - top)]
    return out


def make_scene(size: int, sigma: float) -> np.ndarray:
    sample = data.builtin_samples("train")[0]["image"]  # astronaut, 512 x 512 RGB
    h, w = sample.shape[:2]
    sharp = np.pad(sample, ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0)),
                   mode="symmetric")[:size, :size]
    return blur_in_strips(np.ascontiguousarray(sharp), kernels.gaussian(15, sigma))


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def build_model(args) -> tuple[Model, dict]:
    if args.model:
        model = unroll.load(args.model)
        fields = ("stages", "scales", "kernel_rcabs", "image_rcabs", "features", "kernel_features",
                  "kernel_size", "channels")
        return model, {"name": args.model, **{f: getattr(model.config, f) for f in fields}}
    config = Config(**{**DEMO_MODEL, "features": args.features})
    return Model(config, *registry.build_split(config)), {"name": "demo (random)", **DEMO_MODEL,
                                                          "features": args.features}


def main(argv=None):
    args = parse_args(argv)
    model, described = build_model(args)
    config, params = model.config, model.params
    # The first tiled call on a fresh model: what a user waits for before the first tile is done.
    first = make_scene(max(args.tile, min(args.sizes)), args.sigma)
    t0 = time.perf_counter()
    model.deblur(first, args.tile, args.overlap, args.global_kernel)
    first_call_s = time.perf_counter() - t0
    compiled_sides = {tiling.fit_tile(first.shape[:2], args.tile, args.overlap)}
    tile_shape = jax.ShapeDtypeStruct((1, args.tile, args.tile, config.channels), jnp.float32)
    compiled = model._predict.lower(params, tile_shape).compile()  # for its memory analysis
    result = {
        "model": {**described, "params": registry.num_params(params)},
        "tile": args.tile, "overlap": args.overlap, "global_kernel": args.global_kernel,
        "devices": str(jax.devices()[0].platform), "first_call_s": round(first_call_s, 2),
        "tile_forward_temp_mib": round(compiled.memory_analysis().temp_size_in_bytes / 2**20, 1),
        "runs": [],
    }
    for size in args.sizes:
        scene = make_scene(size, args.sigma)
        side = tiling.fit_tile((size, size), args.tile, args.overlap)  # the side deblur runs
        if side not in compiled_sides:  # time the tiles, not their compilation
            model.deblur(scene, args.tile, args.overlap, args.global_kernel)
            compiled_sides.add(side)
        tracemalloc.start()
        t0, cpu0 = time.perf_counter(), time.process_time()
        restored, _ = model.deblur(scene, args.tile, args.overlap, args.global_kernel,
                                   progress=args.progress)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        _, host_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert restored.shape == scene.shape and np.all(np.isfinite(restored))
        count = tiling.num_tiles((size, size), args.tile, args.overlap)
        megapixels = size * size / 1e6
        result["runs"].append({
            "size": size, "megapixels": round(megapixels, 2), "tiles": count,
            "seconds": round(seconds, 1), "seconds_per_megapixel": round(seconds / megapixels, 2),
            "seconds_per_tile": round(seconds / count, 3),
            "cpu_seconds_per_megapixel": round(cpu / megapixels, 2),
            "fitted_tile": side, "processed_pixel_ratio": round(count * side ** 2 / size ** 2, 2),
            "host_peak_mib": round(host_peak / 2**20, 1), "rss_peak_mib": round(rss_mib(), 1),
            "scene_mib": round(scene.nbytes / 2**20, 1),
            "whole_image_forward_estimate_gib": round(
                deblur.forward_bytes(config, size, size) / 2**30, 2),
        })
        if args.whole:
            model.deblur(scene)  # warm-up: compiles the whole-image shape
            t0 = time.perf_counter()
            model.deblur(scene)
            whole = time.perf_counter() - t0
            result["runs"][-1].update(
                whole_seconds=round(whole, 2), whole_seconds_per_megapixel=round(whole / megapixels, 2),
                tiled_over_whole=round(seconds / whole, 2))
        del scene, restored
        print(json.dumps(result["runs"][-1]), file=sys.stderr)
    per_mp = [r["seconds_per_megapixel"] for r in result["runs"]]
    per_tile = [r["seconds_per_tile"] for r in result["runs"]]
    result["per_megapixel_ratio_largest_to_smallest"] = round(per_mp[-1] / per_mp[0], 2)
    per_cpu = [r["cpu_seconds_per_megapixel"] for r in result["runs"]]
    result["per_tile_ratio_largest_to_smallest"] = round(per_tile[-1] / per_tile[0], 2)
    result["cpu_per_megapixel_ratio_largest_to_smallest"] = round(per_cpu[-1] / per_cpu[0], 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    hostmem.configure()  # reuse XLA:CPU's per-step buffers (unroll/hostmem.py)
    main()
