"""Compile time of one train step against the stage count, per stage-loop mode.

    python -m benchmarks.compile [--stages=1,3,6,10] [--config=demo|paper] [--modes=scan,remat,unrolled]

Prints JSON: per stage count and mode, the seconds to trace and lower, and to XLA-compile, with JAX's
persistent compilation cache off. The stages are a `lax.scan` over parameters stored stacked (a
checkpointed body with remat), so XLA compiles one stage body and the optimiser update sees one
stage's leaves whatever K: compile time should barely grow with K. `unrolled` (stage_unroll=0)
compiles every stage: it grows with K.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from unroll import hostmem, train
from unroll.config import Config


def main():
    from benchmarks.train_step import CONFIGS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default="1,3,6,10")
    parser.add_argument("--config", default="demo", choices=sorted(CONFIGS))
    parser.add_argument("--modes", default="scan,remat,unrolled",
                        help=f"comma-separated stage-loop modes: {', '.join(train.LOOP_MODES)}")
    args = parser.parse_args()
    try:
        stages = [int(s) for s in args.stages.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--stages must be comma-separated integers, got {args.stages!r}")
    config = dataclasses.replace(Config(), **CONFIGS[args.config], steps=1)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in train.LOOP_MODES]
    if unknown or not modes:
        parser.error(f"--modes must name some of {', '.join(train.LOOP_MODES)}, got {args.modes!r}")
    rows = train.compile_seconds(config, stages, modes)
    print(json.dumps({"config": args.config, "compile": rows}, indent=1))


if __name__ == "__main__":
    hostmem.configure()  # reuse XLA:CPU's per-step buffers (unroll/hostmem.py)
    main()
