"""Soft threshold and GST_p: closed forms, brute-force proximal checks, finite gradients everywhere."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from unroll.shrinkage import gst, gst_threshold, soft_threshold

gst_jit = jax.jit(gst, static_argnames=("iterations", "delta"))


def _brute_force_prox(y, theta, p):
    """argmin_x 1/2 (x - y)^2 + theta |x|^p by a dense 1-D search refined once."""
    xs = np.linspace(-1.5 * abs(y) - 1, 1.5 * abs(y) + 1, 200001)
    obj = 0.5 * (xs - y) ** 2 + theta * np.abs(xs) ** p
    best = xs[np.argmin(obj)]
    fine = np.linspace(best - 1e-4, best + 1e-4, 20001)
    return fine[np.argmin(0.5 * (fine - y) ** 2 + theta * np.abs(fine) ** p)]


def _objective(x, y, theta, p):
    return 0.5 * (x - y) ** 2 + theta * np.abs(x) ** p


def test_soft_threshold_closed_form():
    y = np.linspace(-3, 3, 61)
    expected = np.where(np.abs(y) > 0.7, y - 0.7 * np.sign(y), 0.0)
    np.testing.assert_allclose(np.asarray(soft_threshold(jnp.asarray(y), 0.7)), expected, atol=1e-6)


def test_gst_with_p_one_is_soft_threshold():
    y = jnp.linspace(-4, 4, 801)
    for theta in (0.05, 0.3, 1.7):
        np.testing.assert_allclose(np.asarray(gst(y, theta, 1.0)), np.asarray(soft_threshold(y, theta)),
                                   atol=1e-6)


def test_threshold_limits():
    theta = 0.4
    np.testing.assert_allclose(float(gst_threshold(theta, 1.0)), theta, rtol=1e-6)
    np.testing.assert_allclose(float(gst_threshold(theta, 1e-7)), np.sqrt(2 * theta), rtol=1e-5)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.8, 0.95])
@pytest.mark.parametrize("theta", [0.1, 0.5, 1.0])
def test_gst_minimises_the_lp_objective(theta, p):
    ys = np.concatenate([np.linspace(-3, 3, 25), [gst_threshold(theta, p) * 1.001]])
    with jax.enable_x64(True):
        x = np.asarray(gst_jit(jnp.asarray(ys), theta, p, iterations=50))
    for y, xi in zip(ys, x):
        ref = _brute_force_prox(y, theta, p)
        # Same objective value as the brute-force minimiser (the prox may have two minimisers at tau).
        assert _objective(xi, y, theta, p) <= _objective(ref, y, theta, p) + 1e-7, (y, xi, ref)


def test_default_three_iterations_error_is_small():
    """The paper's 3 fixed-point iterations: worst relative error against the converged GST."""
    ys = jnp.linspace(-3, 3, 2001)
    worst = 0.0
    for theta in (0.1, 0.5):
        for p in (0.3, 0.5, 0.8):
            exact = gst_jit(ys, theta, p, iterations=100)
            err = jnp.abs(gst_jit(ys, theta, p) - exact) / jnp.maximum(jnp.abs(ys), 1e-3)
            worst = max(worst, float(err.max()))
    # Measured: at most 0.016 (p = 0.8, |y| just above tau), below 6e-5 for |y| > 2 tau.
    assert worst < 0.03


def test_gradients_on_smooth_parts():
    with jax.enable_x64(True):
        y = jnp.array([-2.3, -1.4, 1.1, 2.6], jnp.float64)
        check_grads(lambda y, t, p: gst(y, t, p), (y, 0.3, 0.6), order=1, modes=["rev", "fwd"],
                    atol=1e-5, rtol=1e-5)
        check_grads(lambda y, t: soft_threshold(y, t), (y, 0.3), order=1, modes=["rev"])


@jax.jit
def _loss_and_grads(y, theta, p):
    def loss(y, theta, p):
        x = gst(y, theta, p)
        return jnp.sum(x ** 2 + x)

    return jax.value_and_grad(loss, argnums=(0, 1, 2))(y, theta, p)


@pytest.mark.parametrize("p", [1e-6, 0.01, 0.5, 0.99, 0.999999, 1.0])
@pytest.mark.parametrize("theta", [1e-12, 1e-3, 0.5, 3.0])
def test_gradients_finite_at_non_smooth_points(theta, p):
    tau = float(gst_threshold(theta, p))
    y = jnp.array([0.0, tau, -tau, tau * (1 + 1e-6), 1e-30, 1e-3, 5.0], jnp.float32)

    value, grads = _loss_and_grads(y, jnp.float32(theta), jnp.float32(p))
    assert np.isfinite(float(value))
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g))), grads


def test_gst_is_odd_and_shrinks():
    y = jnp.linspace(-3, 3, 301)
    x = gst(y, 0.4, 0.5)
    np.testing.assert_allclose(np.asarray(x), -np.asarray(gst(-y, 0.4, 0.5)), atol=1e-6)
    assert np.all(np.abs(np.asarray(x)) <= np.abs(np.asarray(y)) + 1e-6)
