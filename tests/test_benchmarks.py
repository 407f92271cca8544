"""benchmarks.profile_step's classification of compiled HLO instructions by what they compute."""

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.profile_step import _classify_hlo


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
