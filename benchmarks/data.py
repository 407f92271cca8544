"""Throughput of the training data pipeline: host batches per second.

    python -m benchmarks.data [--batch=8 --patch=256 --kernel=15 --noise=1e-3 --batches=30
                               --workers=0,2]

Sources: "builtin" (the scikit-image photographs, decoded once and cached) and "jpeg_folder"
(synthetic 600x600 JPEGs in a temporary folder, AID-sized, decoded on every access). Prints one JSON
object; compare `batches_per_sec` with train steps per second to see whether data loading can be the
bottleneck.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from unroll import data


def write_jpeg_folder(root: str, count: int = 24, size: int = 600) -> str:
    """Smooth random colour images (compress like photographs) saved as JPEG."""
    rng = np.random.default_rng(0)
    for i in range(count):
        small = rng.random((size // 20, size // 20, 3))
        img = np.kron(small, np.ones((20, 20, 1))) * 0.8 + 0.2 * rng.random((size, size, 3))
        data.save_image(os.path.join(root, f"img{i:03d}.jpg"), img)
    return root


def batches_per_sec(source, args, workers: int) -> dict:
    ds = data.make_train_dataset(source, patch_size=args.patch, batch_size=args.batch,
                                 kernel_size=args.kernel, noise=args.noise, seed=0,
                                 process_index=0, process_count=1, num_workers=workers,
                                 num_threads=args.threads)
    it = iter(ds)
    t0 = time.perf_counter()
    batch = next(it)  # worker start-up and first fill of the prefetch buffer
    first = time.perf_counter() - t0
    for _ in range(2):
        next(it)
    t0 = time.perf_counter()
    for _ in range(args.batches):
        batch = next(it)
    elapsed = time.perf_counter() - t0
    it.close()
    return {"workers": workers, "batches_per_sec": round(args.batches / elapsed, 2),
            "ms_per_batch": round(1e3 * elapsed / args.batches, 1),
            "first_batch_s": round(first, 2),
            "shape": "x".join(map(str, batch["blurred"].shape))}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--kernel", type=int, default=15)
    parser.add_argument("--noise", type=float, default=1e-3)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", default="0,2", help="comma-separated worker counts")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    results = {"batch": args.batch, "patch": args.patch, "kernel": args.kernel,
               "noise": args.noise, "threads": args.threads, "cpus": os.cpu_count(), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_jpeg_folder(tmp)
        sources = {"builtin": lambda: data.builtin_samples("train"),
                   "jpeg_folder": lambda: data.ImageFolder(folder, cache=False)}
        for name, make in sources.items():
            results["runs"][name] = [batches_per_sec(make(), args, w) for w in workers]
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
