"""Multi-process training on JAX's distributed runtime, for real: two processes on this machine
(coordinator on localhost, gloo collectives between the CPU processes)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "experiments" / "flags" / "tiny.flags"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env():
    return dict(os.environ)  # conftest's compile cache and XLA flags; each process sets its devices


def _run_all(commands, timeout=600):
    procs = [subprocess.Popen(c, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for c in commands]
    outputs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outputs.append(out)
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    return outputs


def test_two_processes_match_one_on_the_same_global_batches(tmp_path):
    worker = str(ROOT / "tests" / "distributed_worker.py")
    port = str(_free_port())
    _run_all([[sys.executable, worker, str(i), "2", port, str(tmp_path / f"p{i}.npz")] for i in (0, 1)])
    _run_all([[sys.executable, worker, "0", "1", "0", str(tmp_path / "single.npz")]])
    p0, p1, single = (np.load(tmp_path / f) for f in ("p0.npz", "p1.npz", "single.npz"))
    assert len(p0.files) == len(single.files) > 10
    for k in p0.files:
        np.testing.assert_array_equal(p0[k], p1[k])  # replicated: bit-identical on both processes
        # Same global batches; only the order of the cross-process gradient sum differs.
        np.testing.assert_allclose(p0[k], single[k], rtol=1e-5, atol=1e-6)


def test_cli_two_processes_then_resume_with_one(tmp_path):
    workdir = tmp_path / "run"
    port = str(_free_port())
    base = [sys.executable, "-m", "experiments.mgstnet", f"--flagfile={TINY}", f"--workdir={workdir}",
            "--steps=2", "--save_every=2", "--eval_crop=32"]
    _run_all([base + [f"--coordinator_address=localhost:{port}", "--num_processes=2",
                      f"--process_id={i}"] for i in (0, 1)])
    assert sorted(p.name for p in (workdir / "checkpoints" / "latest").iterdir()) == ["2"]
    first = json.loads((workdir / "metrics.json").read_text())
    assert first["step"] == 2
    lines = [json.loads(x) for x in (workdir / "log.jsonl").read_text().splitlines()]
    assert len([x for x in lines if "loss" in x]) == 1  # written once, by process 0

    # Restorable under another process count: one process continues the run.
    out = _run_all([base[:-2] + ["--steps=3", "--save_every=3", "--eval_crop=32"]])[0]
    assert "resuming from step 2" in out
    assert json.loads((workdir / "metrics.json").read_text())["step"] == 3
