"""Accuracy of `unroll.noise.estimate_batch` on the RSSCN7 test scenes, blurred and sharp.

    python -m benchmarks.noise_estimate [--scenes=140] [--levels=0,0.005,0.01,0.02] [--seed=0]

Each scene (400x400 RGB, in sorted order) is blurred by a 15x15 Gaussian of sigma ~ U[1, 4] (drawn
per scene, symmetric boundary, as in training), then white Gaussian noise of each std in --levels is
added (not clipped). The same noise is added to the sharp scene as well. Prints JSON: per level, the
mean estimate and, for levels above 0, the mean and largest relative error |estimate - std| / std,
for the blurred and for the sharp scenes. The scenes are JPEGs: at level 0 the estimate reads their
compression noise (blurred away mostly), which also adds to the sharp scenes' readings.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import numpy as np

from unroll import datasets, kernels, noise, ops
from unroll.data.images import load_image


def scenes(count: int):
    folder = datasets.rsscn7("test")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif"))
    if not paths:
        sys.exit(f"no images under {folder}")
    return paths[:count]


def summary(estimates: np.ndarray, levels: list[float]) -> dict:
    """Per level: the mean estimate, and the mean and largest relative error where the std is > 0."""
    rows = {}
    for column, std in enumerate(levels):
        values = estimates[:, column]
        row = {"mean_estimate": round(float(values.mean()), 6)}
        if std > 0:
            relative = np.abs(values - std) / std
            row |= {"mean_rel_error": round(float(relative.mean()), 4),
                    "max_rel_error": round(float(relative.max()), 4)}
        rows[str(std)] = row
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=140, help="how many test scenes (all 140 by default)")
    parser.add_argument("--levels", default="0,0.005,0.01,0.02", help="comma-separated noise stds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.scenes < 1:
        parser.error(f"--scenes must be >= 1, got {args.scenes}")
    try:
        levels = [float(s) for s in args.levels.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--levels must be comma-separated numbers, got {args.levels!r}")
    if not levels or min(levels) < 0:
        parser.error(f"--levels must be stds >= 0, got {args.levels!r}")
    try:
        paths = scenes(args.scenes)
    except datasets.DatasetNotFoundError as exc:
        sys.exit(str(exc).splitlines()[0])

    rng = np.random.default_rng(args.seed)
    stds = np.asarray(levels, np.float32)[:, None, None, None]
    estimate = jax.jit(noise.estimate_batch)
    blurred_estimates, sharp_estimates, sigmas = [], [], []
    for path in paths:
        sharp = load_image(path, channels=3)
        sigma = float(rng.uniform(1.0, 4.0))
        blurred = np.asarray(ops.blur(sharp[None], kernels.gaussian(15, sigma)[None]))[0]
        draws = rng.standard_normal((len(levels), *sharp.shape)).astype(np.float32) * stds
        blurred_estimates.append(np.asarray(estimate(blurred[None] + draws)))
        sharp_estimates.append(np.asarray(estimate(sharp[None] + draws)))
        sigmas.append(sigma)
    print(json.dumps({
        "scenes": len(paths), "seed": args.seed, "blur_sigma_range": [round(min(sigmas), 2), round(max(sigmas), 2)],
        "blurred": summary(np.stack(blurred_estimates), levels),
        "sharp": summary(np.stack(sharp_estimates), levels),
    }, indent=1))


if __name__ == "__main__":
    main()
