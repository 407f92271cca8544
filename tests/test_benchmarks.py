"""Benchmarks: the profile's classification of compiled HLO instructions, the GPU check's imports, and
benchmarks.ops on tiny sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.profile_step import _classify_hlo, _gst_fractions, _in_scope
from unroll import shrinkage


def test_profile_classifies_convolutions_ffts_reductions_and_transcendentals():
    def f(x, w):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        spectrum = jnp.fft.rfft2(y, axes=(1, 2))
        return jnp.exp(y).sum(axis=(1, 2)), jnp.abs(spectrum)

    x = jnp.asarray(np.random.default_rng(0).random((2, 16, 16, 4)), jnp.float32)
    w = jnp.ones((3, 3, 4, 8), jnp.float32)
    kinds = set(_classify_hlo(jax.jit(f).lower(x, w).compile().as_text()).values())
    assert {"convolution", "fft", "reduce"} <= kinds, kinds
    # A module without a convolution has none; a lone transcendental is one.
    assert set(_classify_hlo(jax.jit(jnp.exp).lower(x).compile().as_text()).values()) & {
        "convolution", "fft", "reduce"} == set()
    assert "elementwise: exp/log" in set(_classify_hlo(jax.jit(jnp.exp).lower(x).compile().as_text()).values())


@pytest.mark.parametrize("grad", ["unrolled", "implicit"])
def test_profile_attributes_gst_and_only_gst_to_its_share(grad):
    """GST's operations (forward and gradient, either differentiation) carry its name scope in the
    compiled module; a convolution beside it and a module without GST get none."""
    op = shrinkage.gst if grad == "unrolled" else shrinkage.gst_implicit

    def loss(x, w, theta):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.sum(op(y, theta, 0.5) ** 2)

    x = jnp.asarray(np.random.default_rng(0).random((2, 16, 16, 4)), jnp.float32)
    w = jnp.ones((3, 3, 4, 4), jnp.float32) / 36
    hlo = jax.jit(jax.grad(loss, argnums=(1, 2))).lower(x, w, jnp.float32(0.1)).compile().as_text()
    fractions, kinds = _gst_fractions(hlo), _classify_hlo(hlo)
    assert set(fractions) == set(kinds)
    assert all(0.0 <= f <= 1.0 for f in fractions.values())
    assert any(f > 0.5 for f in fractions.values())  # GST's fused kernels
    assert all(fractions[n] == 0.0 for n, kind in kinds.items() if kind == "convolution")
    plain = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(x) ** 2))).lower(x).compile().as_text()
    assert set(_gst_fractions(plain).values()) <= {0.0}


def test_gst_scope_matching_is_by_whole_component():
    assert _in_scope("jit(step)/transpose(jvp(gst))/mul")
    assert _in_scope("jit(step)/while/body/gst/pow;jit(step)/add")
    assert not _in_scope("jit(step)/gst_threshold/mul")
    assert not _in_scope("jit(step)/kernel_prox/conv")


def test_gpu_check_runs_without_grain_and_dm_pix():
    """The GPU machine has neither grain nor dm-pix: gpu_check's modules must import and take a
    train step without them (a subprocess in which importing either fails)."""
    import subprocess
    import sys

    code = """
import sys
for name in ("grain", "dm_pix"):
    sys.modules[name] = None  # any import of them now raises ImportError
import dataclasses
import benchmarks.gpu_check
from benchmarks.train_step import measure
from unroll.config import Config
config = dataclasses.replace(Config(), stages=1, scales=1, kernel_rcabs=0, image_rcabs=0, features=4,
                             kernel_features=4, kernel_size=5, patch_size=16, batch_size=1, steps=1)
print(measure(config, repeats=1)["step_s"] > 0)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "True"


def test_conv_grad_formulations_agree_with_jax():
    """Every weight-gradient formulation that benchmarks.conv_grad times (the project's custom VJP
    among them) equals JAX's own gradient on a small batch."""
    from benchmarks import conv_grad

    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 12, 10, 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 3, 5)), jnp.float32)
    dy = jnp.asarray(rng.standard_normal((2, 12, 10, 5)), jnp.float32)
    reference = np.asarray(conv_grad.dw_xla(x, w, dy))
    for name, fn in conv_grad.FORMULATIONS.items():
        np.testing.assert_allclose(np.asarray(jax.jit(fn)(x, w, dy)), reference, rtol=1e-4,
                                   atol=1e-4 * np.abs(reference).max(), err_msg=name)


def test_ops_benchmark_prints_the_gst_and_power_figures():
    """benchmarks.ops on tiny sizes: one JSON object with positive timings for GST and the powers."""
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "benchmarks.ops", "--batch=1", "--size=16", "--kernel=5",
                             "--features=8", "--repeats=1"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout)
    for key in ("soft_threshold_ms", "gst_ms", "gst_halley_ms", "power_ms", "xla_power_ms", "power_chain3_ms",
                "power_indep3_ms", "gst_implicit_grad_all_ms", "gst_halley_grad_all_ms"):
        assert figures[key] > 0, key
    assert figures["gst_full_size_kernels"] == 1 and figures["gst_halley_full_size_kernels"] == 1


def test_report_headline_gives_gst_share_per_configuration():
    from benchmarks.report import headline

    sections = {"profile": {"result": {"demo": {"jax": {"gst_share": 0.031}},
                                       "shipped": {"jax": {"gst_share": 0.052}}}},
                "torch": {"result": {"shipped": {"jax_over_torch": 1.4}}}}
    rows = dict(headline(sections))
    assert rows["GST's share of the demo train step (profile)"] == "0.031"
    assert rows["GST's share of the shipped train step (profile)"] == "0.052"
    assert rows["shipped train step, JAX / eager PyTorch (images/s)"] == "1.4"
    assert not any("soft threshold" in label for label in rows)
