"""unroll.fastmath against numpy's float64 log2 and power, and its derivatives against the exact ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unroll import fastmath, shrinkage

LN2 = np.log(2.0)


def _float32_logspace(lo, hi, n, seed=0):
    rng = np.random.default_rng(seed)
    return np.float32(np.exp(rng.uniform(np.log(lo), np.log(hi), n)))


def test_log2_accuracy_over_the_normal_range():
    tiny, big = np.finfo(np.float32).tiny, np.finfo(np.float32).max
    x = np.concatenate([_float32_logspace(tiny, big, 200_000),
                        np.float32(np.random.default_rng(1).uniform(0.5, 2.0, 100_000))])
    got = np.asarray(jax.jit(fastmath.log2)(x), np.float64)
    exact = np.log2(x.astype(np.float64))
    np.testing.assert_array_less(np.abs(got - exact), 3e-7 * (1 + np.abs(exact)))


def test_log2_is_exact_at_powers_of_two():
    k = np.arange(-126, 128)
    np.testing.assert_array_equal(np.asarray(fastmath.log2(np.float32(2.0) ** k)), k)


def test_log2_clamps_at_the_smallest_normal_with_finite_derivatives():
    tiny = np.finfo(np.float32).tiny
    x = jnp.array([0.0, -1.0, 1e-45, tiny])
    np.testing.assert_array_equal(np.asarray(fastmath.log2(x)), [-126.0] * 4)
    slope = np.asarray(jax.vmap(jax.grad(fastmath.log2))(x), np.float64)
    np.testing.assert_allclose(slope, [0, 0, 0, 1 / (float(tiny) * LN2)], rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(jax.grad(lambda x: fastmath.power(x, 0.5).sum())(x))))


def test_inf_and_nan_propagate():
    x = jnp.array([jnp.inf, jnp.nan, 2.0])
    np.testing.assert_array_equal(np.asarray(fastmath.log2(x)), [np.inf, np.nan, 1.0])
    np.testing.assert_allclose(np.asarray(fastmath.power(x, -0.5)), [0.0, np.nan, 2 ** -0.5], rtol=1e-6)


def test_log2_derivatives_to_second_order():
    x = jnp.asarray(_float32_logspace(1e-6, 1e6, 1000))
    d1 = jax.vmap(jax.grad(fastmath.log2))(x)
    d2 = jax.vmap(jax.grad(jax.grad(fastmath.log2)))(x)
    x64 = np.asarray(x, np.float64)
    np.testing.assert_allclose(np.asarray(d1), 1 / (x64 * LN2), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(d2), -1 / (x64 ** 2 * LN2), rtol=1e-6)


def test_power_accuracy_and_derivatives():
    x = _float32_logspace(1e-10, 1e10, 100_000)
    e = np.float32(np.random.default_rng(2).uniform(-1, 1, x.size))
    exact = np.power(x.astype(np.float64), e.astype(np.float64))
    scale = 1 + np.abs(e * np.log2(x))  # the exponent's rounding is relative to it
    got = np.asarray(jax.jit(fastmath.power)(x, e), np.float64)
    np.testing.assert_array_less(np.abs(got / exact - 1), 5e-7 * scale)
    dx, de = jax.jit(jax.vmap(jax.grad(fastmath.power, argnums=(0, 1))))(x, e)
    np.testing.assert_array_less(np.abs(np.asarray(dx, np.float64) / (e * exact / x) - 1), 1e-6 * scale)
    de_exact = exact * np.log(x.astype(np.float64))
    np.testing.assert_array_less(np.abs(np.asarray(de, np.float64) - de_exact),
                                 1e-6 * scale * np.abs(de_exact) + 1e-30)


def test_other_dtypes():
    with jax.enable_x64(True):
        x = jnp.asarray([1e-300, 0.3, 7.0, 1e300], jnp.float64)
        np.testing.assert_allclose(np.asarray(fastmath.log2(x)), np.log2(np.asarray(x)), rtol=1e-15)
        assert fastmath.power(x, -0.5).dtype == jnp.float64
    x = jnp.asarray([0.3, 7.0], jnp.bfloat16)
    assert fastmath.log2(x).dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(fastmath.log2(x), np.float32), np.log2([0.3, 7.0]), rtol=1e-2)
    assert float(fastmath.log2(4)) == 2.0  # integers are computed in float32


@pytest.mark.parametrize("solver,iterations", [("fixed_point", 3), ("halley", 1)])
def test_float32_gst_matches_its_float64_evaluation(solver, iterations):
    """GST in float32 (fastmath's log2) against the same iterations in float64 (numpy's log2)."""
    y = np.float32(np.random.default_rng(3).standard_normal(20_000) * 3)
    for theta in (1e-3, 0.1, 0.5, 2.0):
        for p in (1e-3, 0.3, 0.6, 0.999):
            th, pp = np.float32(theta), np.float32(p)
            got = np.asarray(shrinkage.gst(jnp.asarray(y), th, pp, iterations, 1e-5, solver), np.float64)
            with jax.enable_x64(True):
                ref = np.asarray(shrinkage.gst(jnp.asarray(y, jnp.float64), jnp.float64(th), jnp.float64(pp),
                                               iterations, 1e-5, solver))
            np.testing.assert_array_equal(got == 0, ref == 0)
            np.testing.assert_array_less(np.abs(got - ref), 1e-6 * (1 + np.abs(y)))
