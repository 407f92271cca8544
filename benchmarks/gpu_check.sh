#!/usr/bin/env bash
# The GPU check of issue 14: the paper train step (float32, bfloat16), its memory with and without
# remat, and tiled deblurring, as one JSON object. Runs from the source tree with what the lent GPU
# machine has (no install): bash benchmarks/gpu_check.sh [--batch=8] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH=. exec python -m benchmarks.gpu_check "$@"
