"""unroll.hostmem.configure(): the demo train step's freed buffers are reused without page faults,
against the same step in a process with glibc's and JAX's defaults."""

import os
import subprocess
import sys

import pytest

from unroll import hostmem

pytestmark = pytest.mark.skipif(not hostmem.applies(), reason="not Linux with glibc")

# The demo configuration's train step, one stage (temporaries above glibc's largest mmap threshold,
# 32 MB): the fewest page faults of one warm step, with configure() or without.
SCRIPT = """
import dataclasses, resource, sys
from unroll import hostmem
tuned = hostmem.configure() if sys.argv[1] == "tune" else False
import jax
from benchmarks import train_step as T
from unroll.config import Config

config = dataclasses.replace(Config(), **dict(T.CONFIGS["demo"], stages=1, steps=1))
step, state, batch, _, _ = T.build_step(config)
step = step.lower(state, batch).compile()

def fewest_faults(state):
    faults = []
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return state, min(faults[1:])

print(tuned, fewest_faults(state)[1])
"""


def _fewest_faults(mode):
    env = {k: v for k, v in os.environ.items() if k != hostmem.ENV}
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], env={**env, "JAX_PLATFORMS": "cpu"},
                         capture_output=True, text=True, check=True, cwd=os.path.dirname(
                             os.path.dirname(os.path.abspath(__file__)))).stdout.split()
    return out[-2] == "True", int(out[-1])


def test_configure_lets_a_train_step_reuse_its_buffers():
    tuned, after = _fewest_faults("tune")
    untuned, default = _fewest_faults("default")
    assert tuned and not untuned
    assert default > 10_000, default  # the step's temporaries mmap'd and faulted in afresh
    assert after < default / 20, (default, after)


def test_opting_out(monkeypatch):
    monkeypatch.setenv(hostmem.ENV, "0")
    assert not hostmem.applies() and not hostmem.configure()
