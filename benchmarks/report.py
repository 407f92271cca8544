"""Every benchmark of the project in one run: one JSON file and one Markdown report.

    python -m benchmarks.report [--out_dir=benchmarks_out] [--only=ops,train_step,...] [--quick]

Each benchmark runs in its own process (so one's memory and compiled code do not distort the next)
and prints JSON, which is collected under its name in `OUT/report.json`; `OUT/report.md` holds a
table of the headline figures and, per benchmark, every number it printed. A benchmark that fails is
recorded with its error and the others still run; the exit code is then 1.

Sections: gemm (this machine's sgemm rate: the peak that achieved GFLOP/s are given as a fraction
of), ops (FFT blur and adjoints, gradient steps, GST against soft threshold), data (the input
pipeline), train_step (demo, shipped and paper configurations, float32 and bfloat16: images/s and
achieved GFLOP/s), compile (compile time against stage count 1, 3, 6, 10: rolled scan, with remat,
unrolled), model (paper configuration forward / backward and peak memory with and without
per-stage remat), tiled (tiled inference time per megapixel and peak memory; tiled_shipped: the
shipped aerial model on a 2048x2048 scene in 512 tiles against whole, and its first-call latency), profile (time by
kind of operation, and GST's share of each train step, the figure GST is judged by), torch (the eager
PyTorch comparison; without torch installed it is recorded as skipped, with the line that says
why). Timings on a shared machine are only as quiet as the machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from unroll import atomic

# name -> (module, full arguments, --quick arguments)
BENCHMARKS = {
    "gemm": ("benchmarks.gemm", [], ["--size=1024", "--repeats=3"]),
    "ops": ("benchmarks.ops", [], ["--repeats=3", "--batch=4"]),
    "data": ("benchmarks.data", ["--workers=0"], ["--workers=0", "--batches=8"]),
    "train_step": ("benchmarks.train_step", ["--configs=demo,shipped,paper", "--repeats=2"],
                   ["--configs=demo", "--repeats=2"]),
    "train_step_bf16": ("benchmarks.train_step", ["--configs=demo", "--bf16"],
                        ["--configs=demo", "--repeats=2", "--bf16"]),
    "compile": ("benchmarks.compile", ["--stages=1,3,6,10"], ["--stages=1,3,6"]),
    "model": ("benchmarks.model", ["--memory_stages=3,6", "--repeats=1"],
              ["--size=128", "--memory_stages=3,6", "--repeats=1"]),
    "tiled": ("benchmarks.tiled", [], ["--sizes=512,1024"]),
    "tiled_shipped": ("benchmarks.tiled", ["--model=aerial", "--sizes=2048", "--tile=512", "--whole"],
                      ["--model=aerial", "--sizes=512", "--tile=256", "--whole"]),
    "profile": ("benchmarks.profile_step", ["--configs=demo,shipped,paper", "--steps=1"],
                ["--configs=demo", "--steps=1", "--no_torch"]),
    "torch": ("benchmarks.torch_mgstnet", ["--configs=demo,shipped,paper", "--paper_batch=1", "--repeats=2"],
              ["--configs=demo", "--repeats=2"]),
}


def run(module: str, args: list[str], timeout: float) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=timeout)
    seconds = round(time.perf_counter() - t0, 1)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        return {"error": lines[-1], "seconds": seconds, "command": [module, *args]}
    # The JSON object is the last thing printed on stdout.
    text = proc.stdout
    start = text.find("{")
    try:
        result = json.loads(text[start:]) if start >= 0 else {}
    except json.JSONDecodeError as exc:
        return {"error": f"unreadable JSON: {exc}", "seconds": seconds, "command": [module, *args]}
    return {"result": result, "seconds": seconds, "command": [module, *args]}


def flatten(value, prefix: str = ""):
    """(dotted key, number) for every number in a JSON value."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, v in enumerate(value):
            yield from flatten(v, f"{prefix}[{i}]")
    elif isinstance(value, bool):
        return
    elif isinstance(value, (int, float)):
        yield prefix, value


def _num(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def headline(sections: dict) -> list[tuple[str, str]]:
    """The figures our performance bars are about, where their benchmarks ran."""
    rows = []

    def get(name, *path):
        value = sections.get(name, {}).get("result")
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value

    for label, name, path in (
            ("blur, FFT (ms)", "ops", ("blur_fft_ms",)),
            ("blur, direct convolution / FFT", "ops", ("direct_over_fft",)),
            ("demo train step (images/s)", "train_step", ("demo", "images_per_s")),
            ("demo train step (GFLOP/s)", "train_step", ("demo", "gflop_per_s")),
            ("demo train step, bfloat16 (images/s)", "train_step_bf16", ("demo", "images_per_s")),
            ("paper train step (images/s)", "train_step", ("paper", "images_per_s")),
            ("paper train step (GFLOP/s)", "train_step", ("paper", "gflop_per_s")),
            ("paper train step, bfloat16 (images/s)", "train_step_bf16", ("paper", "images_per_s"))):
        value = get(name, *path)
        if value is not None:
            rows.append((label, _num(value)))
    for row in get("compile", "compile") or []:
        mode = {"scan": "scan", "remat": "scan + remat", "unrolled": "unrolled"}.get(
            row.get("mode"), "scan + remat" if row["remat"] else "scan")
        rows.append((f"compile, {row['stages']} stages, {mode} (s)",
                     _num(row["trace_lower_s"] + row["compile_s"])))
    peak = get("gemm", "peak_gflop_per_s")
    if peak:
        rows.append(("sgemm peak of this machine (GFLOP/s)", _num(peak)))
        for config in ("demo", "paper"):
            achieved = get("train_step", config, "gflop_per_s")
            if achieved is not None:
                rows.append((f"{config} train step, fraction of the sgemm peak", _num(achieved / peak)))
    for config in ("demo", "shipped", "paper"):
        ratio = get("torch", config, "jax_over_torch")
        if ratio is not None:
            rows.append((f"{config} train step, JAX / eager PyTorch (images/s)", _num(ratio)))
    for config in ("demo", "shipped", "paper"):  # GST is judged by its share of a step
        share = get("profile", config, "jax", "gst_share")
        if share is not None:
            rows.append((f"GST's share of the {config} train step (profile)", _num(share)))
    for key, stats in (get("model", "memory") or {}).items():
        rows.append((f"gradient temp memory, {key} (MB)", _num(stats["temp_bytes"] / 2 ** 20)))
    for section in ("tiled", "tiled_shipped"):
        model = (get(section, "model") or {}).get("name", "")
        what = f"tiled deblurring ({model}, tile {get(section, 'tile')})"
        for run in get(section, "runs") or []:
            size = f"{run['size']}x{run['size']}"
            rows.append((f"{what} {size} (s per megapixel)", _num(run["seconds_per_megapixel"])))
            rows.append((f"{what} {size} (peak RSS, MB)", _num(run["rss_peak_mib"])))
            if "tiled_over_whole" in run:
                rows.append((f"{what} {size}, tiled / whole (s per megapixel)",
                             _num(run["tiled_over_whole"])))
        if get(section, "first_call_s") is not None:
            rows.append((f"{what}, first call (compile included, s)", _num(get(section, "first_call_s"))))
    return rows


def markdown(report: dict) -> str:
    lines = ["# unroll benchmark report", "",
             f"{report['machine']['platform']}, {report['machine']['cpus']} CPUs, python "
             f"{report['machine']['python']}, {report['date']}.", ""]
    rows = headline(report["sections"])
    if rows:
        lines += ["| figure | value |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows] + [""]
    for name, section in report["sections"].items():
        command = " ".join(["python -m"] + section["command"])
        lines += [f"## {name}", "", f"`{command}` ({section['seconds']} s)", ""]
        if "error" in section:
            lines += [f"failed: {section['error']}", ""]
            continue
        if "skipped" in section:
            lines += [section["skipped"], ""]
            continue
        lines += ["| key | value |", "|---|---|"]
        lines += [f"| {k} | {_num(v)} |" for k, v in flatten(section["result"])] + [""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default="benchmarks_out")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="smaller, faster settings")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per benchmark")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {', '.join(unknown)}; use {', '.join(BENCHMARKS)}")
    skipped = {}
    if "torch" in names and importlib.util.find_spec("torch") is None:
        names.remove("torch")  # optional: needs `pip install torch`
        skipped["torch"] = "skipped: torch is not installed (pip install torch==2.13.0 to compare)"
        print(f"torch: {skipped['torch']}", file=sys.stderr)

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "quick": args.quick,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "python": platform.python_version()},
              "sections": {name: {"skipped": why, "seconds": 0, "command": [BENCHMARKS[name][0]]}
                           for name, why in skipped.items()}}
    for name in names:
        module, full, quick = BENCHMARKS[name]
        print(f"running {name}: python -m {module} {' '.join(quick if args.quick else full)}",
              file=sys.stderr, flush=True)
        try:
            report["sections"][name] = run(module, quick if args.quick else full, args.timeout)
        except subprocess.TimeoutExpired:
            report["sections"][name] = {"error": f"timed out after {args.timeout} s",
                                        "seconds": args.timeout, "command": [module]}
        atomic.write_json(out / "report.json", report)  # partial results survive, never half a file
    atomic.write_text(out / "report.md", markdown(report))
    print(markdown(report))
    failed = [n for n, s in report["sections"].items() if "error" in s]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
