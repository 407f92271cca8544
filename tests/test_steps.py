"""Unrolled steps against jax.grad of their data terms; descent; kernel normalisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unroll import kernels, ops, steps


def _problem(seed=0, hw=(21, 26), c=3, k=7):
    rng = np.random.default_rng(seed)
    u = jnp.asarray(rng.random((2, *hw, c)), jnp.float32)
    h_true = jnp.asarray(np.stack([kernels.gaussian(k, 1.2), kernels.gaussian(k, 2.0)]))
    g = ops.blur(u, h_true) + 0.01 * jnp.asarray(rng.standard_normal(u.shape), jnp.float32)
    h = jnp.asarray(np.stack([kernels.uniform(k)] * 2))
    u0 = g
    return u, g, h, u0


@pytest.mark.parametrize("boundary", ["circular", "symmetric", "zero"])
def test_kernel_step_is_gradient_step_of_mean_data_term(boundary):
    u, g, h, _ = _problem()
    n_obs = u.shape[1] * u.shape[2] * u.shape[3]
    grad = jax.grad(lambda h: jnp.sum(steps.data_term(u, h, g, boundary)) / n_obs)(h)
    mu = jnp.array([0.3, 0.7])
    expected = h - mu[:, None, None] * grad
    np.testing.assert_allclose(np.asarray(steps.kernel_step(h, u, g, mu, boundary)), np.asarray(expected),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("boundary", ["circular", "symmetric", "zero"])
def test_image_step_is_gradient_step_of_data_term(boundary):
    u, g, h, u0 = _problem()
    grad = jax.grad(lambda x: jnp.sum(steps.data_term(x, h, g, boundary)))(u0)
    np.testing.assert_allclose(np.asarray(steps.image_step(u0, h, g, 0.8, boundary)),
                               np.asarray(u0 - 0.8 * grad), rtol=1e-5, atol=1e-6)


def test_small_steps_decrease_the_data_term():
    u, g, h, u0 = _problem(1)
    before_h = steps.data_term(u, h, g)
    after_h = steps.data_term(u, steps.kernel_step(h, u, g, 1e-3), g)
    assert np.all(np.asarray(after_h) < np.asarray(before_h))
    before_u = steps.data_term(u0, h, g)
    after_u = steps.data_term(steps.image_step(u0, h, g, 0.5), h, g)
    assert np.all(np.asarray(after_u) < np.asarray(before_u))


def test_kernel_step_size_does_not_depend_on_image_size():
    """The same mu gives the same relative decrease on a small and a 4x larger image of one texture."""
    rng = np.random.default_rng(2)
    big = jnp.asarray(rng.random((1, 64, 64, 1)), jnp.float32)
    h_true = jnp.asarray(kernels.gaussian(7, 1.5))[None]
    h0 = jnp.asarray(kernels.uniform(7))[None]

    def relative_step(u):
        g = ops.blur(u, h_true, "circular")
        s = steps.kernel_step(h0, u, g, 1.0, "circular")
        return float(jnp.linalg.norm(s - h0))

    small, large = relative_step(big[:, :32, :32]), relative_step(big)
    assert 0.7 < small / large < 1.4


def test_image_step_converges_for_rho_below_two():
    u, g, h, u0 = _problem(3)
    x = u0
    values = []
    for _ in range(20):
        x = steps.image_step(x, h, g, 1.9)
        values.append(float(jnp.sum(steps.data_term(x, h, g))))
    assert all(b <= a * (1 + 1e-5) for a, b in zip(values, values[1:]))


def test_normalize_kernel():
    h = jnp.asarray(np.random.default_rng(4).standard_normal((3, 5, 5)), jnp.float32)
    h = h.at[2].set(-1.0)  # entirely negative: becomes uniform, not NaN
    n = np.asarray(steps.normalize_kernel(h))
    assert np.all(n >= 0)
    np.testing.assert_allclose(n.sum(axis=(1, 2)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(n[2], 1 / 25, rtol=1e-6)
    np.testing.assert_allclose(n[0], np.maximum(h[0], 0) / np.maximum(h[0], 0).sum(), rtol=1e-6)
    grads = jax.grad(lambda h: jnp.sum(steps.normalize_kernel(h) ** 2))(h)
    assert np.all(np.isfinite(np.asarray(grads)))


def _dense_operator(h, hw, boundary):
    """The blur of one-channel [H, W] images as an explicit (H W) x (H W) matrix, column by column."""
    n = hw[0] * hw[1]
    basis = jnp.eye(n, dtype=jnp.float64).reshape(n, 1, *hw, 1)
    cols = jax.vmap(lambda e: ops.blur(e, h[None], boundary))(basis)
    return np.asarray(cols.reshape(n, n)).T


@pytest.mark.parametrize("beta", [1e-3, 0.05, 2.0])
def test_closed_form_image_step_is_the_exact_minimiser_for_the_circular_boundary(beta):
    """Against a dense linear solve of (A^T A + beta I) r = A^T g + beta z."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        hw = (12, 10)
        h = jnp.asarray(kernels.motion(5, rng), jnp.float64)
        z = jnp.asarray(rng.random((1, *hw, 1)))
        g = jnp.asarray(rng.random((1, *hw, 1)))
        A = _dense_operator(h, hw, "circular")
        b = A.T @ np.asarray(g).ravel() + beta * np.asarray(z).ravel()
        expected = np.linalg.solve(A.T @ A + beta * np.eye(A.shape[1]), b)
        r = steps.closed_form_image_step(z, h[None], g, beta, "circular")
        np.testing.assert_allclose(np.asarray(r).ravel(), expected, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("boundary", ["symmetric", "zero"])
def test_closed_form_image_step_converges_to_the_minimiser_for_the_padded_boundaries(boundary):
    """Off the circular boundary the extended-domain solve is refined by conjugate gradients: with
    enough iterations they reach the dense solve's minimiser; the default few already close most of
    the gap that a gradient step leaves (on a small image, where the border weighs most)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        hw, beta = (24, 22), 0.02
        h = jnp.asarray(kernels.motion(7, rng), jnp.float64)
        u_true = np.kron(rng.random((6, 6)), np.ones((4, 4)))[:hw[0], :hw[1]]
        A = _dense_operator(h, hw, boundary)
        g = A @ u_true.ravel() + 0.005 * rng.standard_normal(A.shape[0])
        z = g  # the first stage's u_0 = g
        exact = np.linalg.solve(A.T @ A + beta * np.eye(A.shape[1]), A.T @ g + beta * z)

        def objective(x):
            return 0.5 * np.sum((A @ x - g) ** 2) + 0.5 * beta * np.sum((x - z) ** 2)

        def solve(**options):
            as_image = lambda x: jnp.asarray(x.reshape(1, *hw, 1))
            return np.asarray(steps.closed_form_image_step(as_image(z), h[None], as_image(g), beta,
                                                           boundary, **options)).ravel()

        np.testing.assert_allclose(solve(refine=25), exact, atol=1e-4)
        step = np.asarray(steps.image_step(jnp.asarray(z.reshape(1, *hw, 1)), h[None],
                                           jnp.asarray(g.reshape(1, *hw, 1)), 1.0, boundary)).ravel()
        gap = objective(solve()) - objective(exact)
        assert 0 <= gap < 0.1 * (objective(step) - objective(exact))
        assert gap < 0.2 * (objective(solve(refine=0)) - objective(exact))


def test_closed_form_image_step_is_finite_and_differentiable():
    u, g, h, u0 = _problem()

    def loss(beta, h):
        return jnp.sum(steps.closed_form_image_step(u0, h, g, beta) ** 2)

    grads = jax.grad(loss, argnums=(0, 1))(jnp.array([1e-4, 0.3]), h)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in grads)
    assert float(jnp.abs(grads[0]).min()) > 0


def test_closed_form_image_step_has_finite_gradients_when_conjugate_gradients_converge():
    """Conjugate gradients that have (nearly) nothing left to correct divide tiny dot products:
    their squares underflow float32 in the backward pass unless the division is guarded (this made
    a closed-form network's first training steps NaN)."""
    rng = np.random.default_rng(0)
    g = jnp.asarray(1e-12 * rng.random((2, 20, 20, 3)), jnp.float32)  # residual dot products ~1e-24
    h = jnp.asarray(np.stack([kernels.motion(7, np.random.default_rng(i)) for i in range(2)]))

    def loss(beta, h):
        return 1e12 * jnp.sum(steps.closed_form_image_step(g, h, g, beta))

    grads = jax.grad(loss, argnums=(0, 1))(jnp.array([0.01, 0.1]), h)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in grads)
