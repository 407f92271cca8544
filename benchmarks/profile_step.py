"""Where a train step's time goes, by kind of operation, in JAX (XLA:CPU) and in eager PyTorch.

    python -m benchmarks.profile_step [--configs=demo,paper] [--paper_batch=1] [--steps=2] [--no_torch]
        [--stage_unroll=N]

Prints one JSON object per configuration: the step's wall time and, per category (convolution,
dot, fft, reduce, elementwise, data movement, ...), the milliseconds per step summed over the
operations of that kind, with their share of the summed total, and the ten most expensive
operations; for JAX also GST's time and share (`gst_ms`, `gst_share`: its operations, forward and
gradient, found by their name scope `unroll.shrinkage.SCOPE`; a fusion of GST with other work
counts by the fraction of its operations that are GST's). Operations can overlap on the CPU's
threads, so the sums may exceed the wall time.

JAX: a `jax.profiler` trace of the jitted step, with XLA:CPU's per-operation trace events turned on
(`--xla_cpu_enable_xprof_traceme`), read back with `jax.profiler.ProfileData`; each event is matched
to its instruction in the compiled HLO to find what it computes (a fusion is named after its contents:
a convolution, a dot, an FFT, a reduction, or elementwise work). PyTorch: `torch.profiler`'s self
CPU time per aten operator (skipped with a line on stderr when torch is absent).
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # XLA reads its flags when the backend starts: before jax is imported
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()

import argparse  # noqa: E402
import collections  # noqa: E402
import dataclasses  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

from benchmarks.train_step import CONFIGS, build_step, cpu_stage_unroll  # noqa: E402
from unroll import hostmem  # noqa: E402
from unroll.config import Config  # noqa: E402
from unroll.shrinkage import SCOPE  # noqa: E402

# Instructions whose events contain other events (their bodies are counted op by op).
_CONTAINERS = ("while", "call", "conditional")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?\b([a-z][\w\-]*)\(", re.M)
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def _computations(hlo: str) -> dict[str, str]:
    """{computation name: its text} of an HLO module's text."""
    out = {}
    for block in hlo.split("\n\n"):
        head = re.match(r"\s*(?:ENTRY )?%?([\w.\-]+) ", block)
        if head:
            out[head.group(1)] = block
    return out


def _category(opcode: str, called: str) -> str:
    """What an instruction computes, from its opcode and (for a fusion) its fused computation."""
    text = f" {opcode}( " + called
    for kind, ops in (("convolution", ("convolution(",)), ("fft", ("fft(",)), ("dot", ("dot(",)),
                      ("reduce", ("reduce(", "reduce-window(")),
                      ("scatter/gather", ("scatter(", "gather(")),
                      ("elementwise: exp/log", ("exponential(", "log(", "power(")),
                      ("sort", ("sort(",))):
        if any(op in text for op in ops):
            return kind
    if opcode in ("fusion",) and any(op in called for op in ("add(", "multiply(", "subtract(", "divide(",
                                                               "maximum(", "select(", "compare(")):
        return "elementwise"
    if opcode in ("copy", "transpose", "broadcast", "dynamic-update-slice", "dynamic-slice", "slice",
                  "concatenate", "pad", "reverse", "bitcast", "fusion", "copy-start", "copy-done"):
        return "data movement"
    return opcode


def _classify_hlo(hlo: str) -> dict[str, str]:
    """{instruction name: category} for every instruction of the module."""
    computations = _computations(hlo)
    out = {}
    for line in hlo.splitlines():
        match = _INSTRUCTION.match(line)
        if match:
            called = re.search(r"calls=%?([\w.\-]+)", line)
            out[match.group(1)] = _category(match.group(2), computations.get(called.group(1), "") if called else "")
    return out


def _in_scope(op_name: str) -> bool:
    """Whether an op_name path (`jit(step)/transpose(jvp(gst))/mul`, several joined by `;` when
    XLA merged operations) has a component in GST's name scope."""
    return any(part == SCOPE for name in op_name.split(";")
               for part in re.split(r"[/()]", name))


def _gst_fractions(hlo: str) -> dict[str, float]:
    """{instruction name: the fraction of its work that is GST's} for every instruction of the
    module: for a fusion, the share of the fused operations (those with an op_name) in GST's scope,
    since XLA may fuse GST with the elementwise work around it; else 1 or 0 by its own op_name."""
    computations = _computations(hlo)
    out = {}
    for line in hlo.splitlines():
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        called = re.search(r"calls=%?([\w.\-]+)", line)
        if match.group(2) == "fusion" and called and called.group(1) in computations:
            names = _OP_NAME.findall(computations[called.group(1)])
        else:
            names = _OP_NAME.findall(line)[:1]
        out[match.group(1)] = sum(map(_in_scope, names)) / len(names) if names else 0.0
    return out


def _summarise(times: dict[str, float], categories: dict[str, str], steps: int, wall_s: float,
               gst: dict[str, float] | None = None) -> dict:
    by_kind = collections.Counter()
    for name, us in times.items():
        by_kind[categories.get(name, "other")] += us
    total = sum(by_kind.values())
    top = sorted(times.items(), key=lambda kv: -kv[1])[:10]
    out = {
        "step_s": round(wall_s, 4),
        "summed_ops_ms": round(total / 1e3 / steps, 1),
        "by_kind_ms": {k: round(v / 1e3 / steps, 1) for k, v in by_kind.most_common()},
        "by_kind_share": {k: round(v / total, 3) for k, v in by_kind.most_common()},
        "top_ops_ms": {f"{n} ({categories.get(n, 'other')})": round(v / 1e3 / steps, 1) for n, v in top},
    }
    if gst is not None:  # GST's operations, forward and gradient, against the summed op time
        gst_us = sum(us * gst.get(name, 0.0) for name, us in times.items())
        out["gst_ms"] = round(gst_us / 1e3 / steps, 2)
        out["gst_share"] = round(gst_us / total, 4) if total else 0.0
    return out


def profile_jax(config: Config, steps: int) -> dict:
    step, state, batch, _, _ = build_step(config)
    compiled = step.lower(state, batch).compile()
    hlo = compiled.as_text()
    categories, gst = _classify_hlo(hlo), _gst_fractions(hlo)
    for _ in range(2):  # warm-up
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder):
            t0 = time.perf_counter()
            for _ in range(steps):
                state, metrics = compiled(state, batch)
                jax.block_until_ready(metrics)
            wall = (time.perf_counter() - t0) / steps
        (path,) = glob.glob(os.path.join(folder, "**", "*.xplane.pb"), recursive=True)
        profile = jax.profiler.ProfileData.from_file(path)
    times = collections.Counter()
    for plane in profile.planes:
        for line in plane.lines:
            for event in line.events:
                name = event.name
                if name in categories and not name.startswith(_CONTAINERS):
                    times[name] += event.duration_ns / 1e3
    return _summarise(times, categories, steps, wall, gst)


def _torch_kind(name: str) -> str:
    name = name.lower()
    for kind, keys in (("convolution", ("conv",)), ("fft", ("fft",)), ("dot", ("mm", "matmul", "linear")),
                       ("reduce", ("sum", "mean", "norm", "max", "min")),
                       ("elementwise: exp/log", ("exp", "log", "pow", "sigmoid", "softplus")),
                       ("data movement", ("copy", "cat", "pad", "flip", "slice", "narrow", "index",
                                          "clone", "contiguous", "permute", "transpose", "fill",
                                          "zero", "empty", "view", "reshape", "expand", "stack"))):
        if any(k in name for k in keys):
            return kind
    return "elementwise"


def profile_torch(config: Config, steps: int) -> dict:
    import torch

    from benchmarks.torch_mgstnet import torch_train_step

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    step = torch_train_step(config)[0]
    for _ in range(2):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - t0) / steps
    times = {e.key: e.self_cpu_time_total for e in prof.key_averages() if e.self_cpu_time_total > 0}
    return _summarise(times, {k: _torch_kind(k) for k in times}, steps, wall)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="demo,shipped,paper")
    parser.add_argument("--paper_batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--no_torch", action="store_true")
    parser.add_argument("--stage_unroll", type=int, default=None,
                        help="MGSTNet stages per iteration of the stage loop (default 0: all, as "
                             "CPU training runs them; 1: the rolled scan)")
    args = parser.parse_args()
    results = {"jax_version": jax.__version__, "cores": len(os.sched_getaffinity(0))}
    for name in args.configs.split(","):
        overrides = dict(CONFIGS[name], steps=1, stage_unroll=cpu_stage_unroll(args.stage_unroll, False))
        if name == "paper":
            overrides["batch_size"] = args.paper_batch
        config = dataclasses.replace(Config(), **overrides)
        results[name] = {"jax": profile_jax(config, args.steps)}
        if not args.no_torch:
            try:
                results[name]["torch"] = profile_torch(config, args.steps)
            except ImportError:
                print("profile_step: torch is not installed, skipping its profile", file=sys.stderr)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    hostmem.configure()  # reuse XLA:CPU's per-step buffers (unroll/hostmem.py)
    main()
