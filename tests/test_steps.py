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
