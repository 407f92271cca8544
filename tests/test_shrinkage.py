"""Soft threshold and GST_p: closed forms, brute-force proximal checks, finite gradients everywhere."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from unroll.shrinkage import gst, gst_implicit, gst_threshold, soft_threshold

gst_jit = jax.jit(gst, static_argnames=("iterations", "delta", "solver"))


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


@functools.partial(jax.jit, static_argnames="solver")
def _loss_and_grads(y, theta, p, solver="fixed_point"):
    def loss(y, theta, p):
        x = gst(y, theta, p, iterations=3 if solver == "fixed_point" else 1, solver=solver)
        return jnp.sum(x ** 2 + x)

    return jax.value_and_grad(loss, argnums=(0, 1, 2))(y, theta, p)


@pytest.mark.parametrize("solver", ["fixed_point", "halley"])
@pytest.mark.parametrize("p", [1e-6, 0.01, 0.5, 0.99, 0.999999, 1.0])
@pytest.mark.parametrize("theta", [1e-12, 1e-3, 0.5, 3.0])
def test_gradients_finite_at_non_smooth_points(theta, p, solver):
    tau = float(gst_threshold(theta, p))
    y = jnp.array([0.0, tau, -tau, tau * (1 + 1e-6), 1e-30, 1e-3, 5.0, -1e4], jnp.float32)

    value, grads = _loss_and_grads(y, jnp.float32(theta), jnp.float32(p), solver)
    assert np.isfinite(float(value))
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g))), grads


# ----------------------------------------------------------------------------------------------------
# solver="halley": one Halley step on the optimality condition from an upper bound of the root.

def _grid(thetas, ps):
    """theta, p `[rows, 1]` and |y| `[rows, 2400]` from just above tau to tau + 5 (float64)."""
    pairs = [(t, q) for t in thetas for q in ps]
    theta = jnp.asarray([[t] for t, _ in pairs], jnp.float64)
    p = jnp.asarray([[q] for _, q in pairs], jnp.float64)
    tau = gst_threshold(theta, p)
    offsets = jnp.concatenate([jnp.logspace(-9, -1, 400), jnp.linspace(0.01, 5, 2000)])
    return tau * (1 + 1e-9) + offsets * jnp.maximum(tau, 1.0), theta, p


def test_one_halley_step_is_more_accurate_than_three_fixed_point_steps():
    """Against the converged prox (same delta), over theta in [1e-3, 5] and p in [1e-3, 0.999]: the
    worst error and the mean error relative to |y| (measured in float64: Halley 6.8e-4 / 1.3e-5,
    fixed point 1.7e-2 / 6.0e-4)."""
    with jax.enable_x64(True):
        y, theta, p = _grid((1e-3, 0.01, 0.1, 0.5, 1.0, 5.0), (1e-3, 0.05, 0.3, 0.6, 0.9, 0.999))
        exact = gst_jit(y, theta, p, iterations=200, solver="halley")
        # Both solvers converge to the same root.
        np.testing.assert_allclose(np.asarray(gst_jit(y, theta, p, iterations=400)), np.asarray(exact),
                                   rtol=1e-9, atol=1e-12)
        errors = {solver: np.asarray(jnp.abs(gst_jit(y, theta, p, iterations=n, solver=solver) - exact) / y)
                  for solver, n in (("fixed_point", 3), ("halley", 1))}
    assert errors["halley"].max() < 1e-3 and errors["halley"].mean() < 5e-5
    assert errors["halley"].max() < errors["fixed_point"].max() / 10
    assert errors["halley"].mean() < errors["fixed_point"].mean() / 3


@pytest.mark.parametrize("p", [0.1, 0.5, 0.95])
@pytest.mark.parametrize("theta", [0.1, 1.0])
def test_halley_minimises_the_lp_objective(theta, p):
    ys = np.concatenate([np.linspace(-3, 3, 25), [gst_threshold(theta, p) * 1.001]])
    with jax.enable_x64(True):
        x = np.asarray(gst_jit(jnp.asarray(ys), theta, p, iterations=3, delta=1e-12, solver="halley"))
    for y, xi in zip(ys, x):
        ref = _brute_force_prox(y, theta, p)
        assert _objective(xi, y, theta, p) <= _objective(ref, y, theta, p) + 1e-7, (y, xi, ref)


def test_halley_with_p_one_is_soft_threshold_and_checks_its_arguments():
    y = jnp.linspace(-4, 4, 801)
    np.testing.assert_allclose(np.asarray(gst(y, 0.3, 1.0, 1, solver="halley")),
                               np.asarray(soft_threshold(y, 0.3)), atol=1e-6)
    with pytest.raises(ValueError, match="delta > 0"):
        gst(y, 0.3, 0.5, 1, delta=0.0, solver="halley")
    with pytest.raises(ValueError, match="solver must be one of"):
        gst(y, 0.3, 0.5, solver="bisection")


def test_halley_implicit_has_the_same_value_and_the_exact_derivatives():
    with jax.enable_x64(True):
        y, theta, p = _grid((0.1, 1.0), (0.3, 0.8))
        y = y[:, ::40]
        value = gst_implicit(y, theta, p, 1, 1e-5, "halley")
        np.testing.assert_array_equal(np.asarray(value), np.asarray(gst(y, theta, p, 1, 1e-5, "halley")))
        d_y = jax.grad(lambda y: jnp.sum(gst_implicit(y, theta, p, 1, 1e-5, "halley")))(y)
        exact = jax.grad(lambda y: jnp.sum(gst_implicit(y, theta, p, 200, 1e-5)))(y)
    np.testing.assert_allclose(np.asarray(d_y), np.asarray(exact), rtol=1e-3)


def test_gst_is_odd_and_shrinks():
    y = jnp.linspace(-3, 3, 301)
    x = gst(y, 0.4, 0.5)
    np.testing.assert_allclose(np.asarray(x), -np.asarray(gst(-y, 0.4, 0.5)), atol=1e-6)
    assert np.all(np.abs(np.asarray(x)) <= np.abs(np.asarray(y)) + 1e-6)


# ----------------------------------------------------------------------------------------------------
# gst_implicit: derivatives of the exact prox by the implicit function theorem.



def _elementwise_derivatives(fn, y, theta, p, iterations, delta):
    """dx/dy, dx/dtheta, dx/dp per element (theta and p broadcast to y's shape)."""
    theta, p = jnp.broadcast_to(theta, y.shape), jnp.broadcast_to(p, y.shape)
    return jax.grad(lambda *a: jnp.sum(fn(*a, iterations, delta)), argnums=(0, 1, 2))(y, theta, p)


def _rows(pairs, samples):
    """theta, p `[len(pairs), 1]` (float64) and y `[len(pairs), samples]` ~ N(0, (2 tau)^2)."""
    theta = jnp.asarray([[t] for t, _ in pairs], jnp.float64)
    p = jnp.asarray([[q] for _, q in pairs], jnp.float64)
    z = np.random.default_rng(0).normal(size=(len(pairs), samples))
    return jnp.asarray(z) * 2 * gst_threshold(theta, p), theta, p


def _row_errors(a, ref):
    return np.asarray(jnp.linalg.norm(a - ref, axis=1) / jnp.linalg.norm(ref, axis=1))


@jax.jit
def _converged_and_three_steps(y, theta, p):
    """Derivatives of (unrolled, implicit) x (60 steps, 3 steps), delta = 0, and the 60-step values."""
    return ([_elementwise_derivatives(fn, y, theta, p, n, 0.0)
             for n in (60, 3) for fn in (gst, gst_implicit)],
            gst(y, theta, p, 60, 0.0), gst_implicit(y, theta, p, 60, 0.0))


def test_implicit_gradient_equals_unrolled_when_converged():
    """Unrolling 60 fixed-point steps (contraction <= p/2 each) converges to the exact prox's
    derivatives (delta = 0)."""
    with jax.enable_x64(True):
        y, theta, p = _rows([(0.3, 0.6), (0.05, 0.2), (1.0, 0.9)], 200)
        (unrolled, implicit, three, three_implicit), x, x_implicit = _converged_and_three_steps(
            y, theta, p)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(x_implicit))
        for u, i in zip(unrolled, implicit):
            np.testing.assert_allclose(np.asarray(i), np.asarray(u), rtol=1e-9, atol=1e-12)
        # Three unrolled steps are measurably off; the implicit derivative at the 3-step value less so.
        err = [_row_errors(a, u) for a, u in zip(three, unrolled)]
        err_implicit = [_row_errors(a, u) for a, u in zip(three_implicit, unrolled)]
        for e, f in zip(err_implicit, err):
            assert np.all(f > 1e-4) and np.all(e < 0.5 * f), (err, err_implicit)


def test_implicit_gradient_matches_finite_differences_of_converged_prox():
    """Per-channel theta and p (broadcast, so their cotangents are summed) against central
    differences of the converged exact prox (200 steps, delta = 0) in float64."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        theta = jnp.asarray([0.2, 0.5, 0.05])
        p = jnp.asarray([0.3, 0.7, 0.95])
        y = jnp.asarray(rng.normal(0, 1.5, (4, 5, 3)))
        w = jnp.asarray(rng.normal(size=y.shape))

        def loss(fn, iterations):
            return lambda y, t, q: jnp.sum(w * jnp.sin(fn(y, t, q, iterations, 0.0)))

        grads = jax.jit(jax.grad(loss(gst_implicit, 200), argnums=(0, 1, 2)))(y, theta, p)
        assert [g.shape for g in grads] == [y.shape, theta.shape, p.shape]
        exact = jax.jit(loss(gst, 200))
        args, step = [y, theta, p], 1e-6
        for i, g in enumerate(grads):
            fd = np.zeros(args[i].shape)
            for j in np.ndindex(args[i].shape):
                plus, minus = list(args), list(args)
                plus[i] = args[i].at[j].add(step)
                minus[i] = args[i].at[j].add(-step)
                fd[j] = (exact(*plus) - exact(*minus)) / (2 * step)
            np.testing.assert_allclose(np.asarray(g), fd, rtol=1e-6, atol=1e-8)


def test_implicit_slope_at_the_threshold_is_one_over_one_minus_half_p():
    """At |y| -> tau+ the root is S_tau = (2 theta (1-p))^(1/(2-p)) and F_S = 1 - p/2 (eq. I2)."""
    with jax.enable_x64(True):
        theta, p = jnp.float64(0.4), jnp.asarray([0.1, 0.5, 0.9])
        y = gst_threshold(theta, p) * (1 + 1e-10) * jnp.asarray([1.0, -1.0, 1.0])
        x = gst_implicit(y, theta, p, 80, 0.0)
        s_tau = (2 * 0.4 * (1 - np.asarray(p))) ** (1 / (2 - np.asarray(p)))
        np.testing.assert_allclose(np.abs(np.asarray(x)), s_tau, rtol=1e-6)
        d_y = jax.grad(lambda y: jnp.sum(gst_implicit(y, theta, p, 80, 0.0)))(y)
        np.testing.assert_allclose(np.asarray(d_y), 1 / (1 - np.asarray(p) / 2), rtol=1e-5)


def test_implicit_gradients_finite_everywhere():
    """Every (theta, p) of the unrolled operator's test grid at once: y = 0, +-tau, just above tau,
    denormal-small and large, float32."""
    grid = [(t, q) for t in (1e-12, 1e-3, 0.5, 3.0) for q in (1e-6, 0.01, 0.5, 0.99, 0.999999, 1.0)]
    theta = jnp.asarray([[t] for t, _ in grid], jnp.float32)
    p = jnp.asarray([[q] for _, q in grid], jnp.float32)
    tau = gst_threshold(theta, p)
    y = jnp.concatenate([jnp.zeros_like(tau), tau, -tau, tau * (1 + 1e-6), -tau * (1 + 1e-6),
                         jnp.full_like(tau, 1e-30), jnp.full_like(tau, 1e-3),
                         jnp.full_like(tau, 5.0), jnp.full_like(tau, -7.0)], axis=1)

    def loss(y, theta, p):
        x = gst_implicit(y, theta, p)
        return jnp.sum(x ** 2 + x)

    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(y, theta, p)
    assert np.isfinite(float(value))
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g))), grads
    # Below the threshold the prox is 0 and so is its derivative (at |y| = tau rounding decides).
    assert np.all(np.asarray(grads[0][:, 0]) == 0.0)
    # Same value as the unrolled operator; the derivative in y is 1 / F_S in (1, 2] where kept.
    np.testing.assert_array_equal(np.asarray(gst_implicit(y, theta, p)), np.asarray(gst(y, theta, p)))
    kept = np.asarray(gst(y, theta, p)) != 0
    d_y = np.asarray(jax.grad(lambda y: jnp.sum(gst_implicit(y, theta, p)))(y))
    assert np.all((d_y[kept] >= 1 - 1e-6) & (d_y[kept] <= 2 + 1e-6))
