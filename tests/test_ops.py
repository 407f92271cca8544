"""Blur operators against scipy, adjoint (dot-product) tests, and delta-kernel identities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.signal import convolve2d

from unroll import kernels, ops

SCIPY_BOUNDARY = {"circular": "wrap", "symmetric": "symm", "zero": "fill"}
SHAPES = [  # (image H, W, C), kernel (kh, kw)
    ((23, 31, 3), (7, 5)),
    ((17, 12, 1), (3, 11)),
    ((9, 13, 2), (9, 13)),  # kernel as large as the image
]


def _random(shape, seed, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _scipy_blur(u, h, boundary):
    return np.stack([
        np.stack([convolve2d(u[n, :, :, c], h[n], mode="same", boundary=SCIPY_BOUNDARY[boundary])
                  for c in range(u.shape[-1])], -1)
        for n in range(u.shape[0])])


@pytest.mark.parametrize("boundary", ops.BOUNDARIES)
@pytest.mark.parametrize("image,kernel", SHAPES)
def test_blur_equals_scipy_convolve2d(boundary, image, kernel):
    u = _random((2,) + image, 0, np.float64)
    h = np.abs(_random((2,) + kernel, 1, np.float64))
    with jax.enable_x64(True):
        got = ops.blur(jnp.asarray(u), jnp.asarray(h), boundary)
        np.testing.assert_allclose(np.asarray(got), _scipy_blur(u, h, boundary), atol=1e-10)
    got32 = ops.blur(jnp.asarray(u, jnp.float32), jnp.asarray(h, jnp.float32), boundary)
    assert got32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got32), _scipy_blur(u, h, boundary), atol=2e-5)


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("boundary", ops.BOUNDARIES)
@pytest.mark.parametrize("image,kernel", SHAPES)
def test_adjoints_dot_product(boundary, image, kernel, dtype, rtol):
    u, r = _random((2,) + image, 2, dtype), _random((2,) + image, 3, dtype)
    h = _random((2,) + kernel, 4, dtype)
    with jax.enable_x64(dtype == np.float64):
        u_, r_, h_ = map(jnp.asarray, (u, r, h))
        lhs = jnp.vdot(ops.blur(u_, h_, boundary), r_)
        rhs_image = jnp.vdot(u_, ops.blur_adjoint(r_, h_, boundary))
        rhs_kernel = jnp.vdot(h_, ops.kernel_adjoint(u_, r_, h.shape, boundary))
        scale = float(jnp.linalg.norm(u_) * jnp.linalg.norm(r_) * jnp.linalg.norm(h_))
        assert abs(float(lhs - rhs_image)) <= rtol * scale
        assert abs(float(lhs - rhs_kernel)) <= rtol * scale


@pytest.mark.parametrize("boundary", ops.BOUNDARIES)
def test_kernel_adjoint_is_gradient_of_data_term(boundary):
    u, g = _random((2, 19, 22, 3), 5), _random((2, 19, 22, 3), 6)
    h = np.abs(_random((2, 5, 7), 7))
    u, g, h = map(jnp.asarray, (u, g, h))

    def data(h):
        return 0.5 * jnp.sum((ops.blur(u, h, boundary) - g) ** 2)

    expected = jax.grad(data)(h)
    got = ops.kernel_adjoint(u, ops.blur(u, h, boundary) - g, h.shape, boundary)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-4, atol=1e-3)
    # The flipped-kernel mistake (correlating instead of convolving) must not pass this test.
    assert not np.allclose(np.asarray(got), np.asarray(expected)[:, ::-1, ::-1], rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("boundary", ops.BOUNDARIES)
def test_centred_delta_is_identity(boundary):
    u = jnp.asarray(_random((1, 16, 21, 3), 8))
    h = jnp.asarray(kernels.delta(9))[None]
    np.testing.assert_allclose(np.asarray(ops.blur(u, h, boundary)), np.asarray(u), atol=1e-6)


def test_shifted_delta_shifts_down_and_right():
    """A delta at centre + (dy, dx) moves image content by (+dy, +dx): g[i, j] = u[i - dy, j - dx]."""
    u = jnp.asarray(_random((1, 16, 21, 1), 9))
    h = jnp.asarray(kernels.delta(7, shift=(2, -1)))[None]
    g = ops.blur(u, h, "circular")
    np.testing.assert_allclose(np.asarray(g), np.roll(np.asarray(u), (2, -1), axis=(1, 2)), atol=1e-6)


def test_jit_vmap_grad():
    u = jnp.asarray(_random((3, 12, 14, 1), 10))
    h = jnp.asarray(np.abs(_random((3, 5, 5), 11)))
    eager = ops.blur(u, h)
    np.testing.assert_allclose(np.asarray(jax.jit(ops.blur)(u, h)), np.asarray(eager), atol=1e-6)
    vmapped = jax.vmap(lambda a, b: ops.blur(a[None], b[None])[0])(u, h)
    np.testing.assert_allclose(np.asarray(vmapped), np.asarray(eager), atol=1e-6)
    # jax.grad through blur in u is blur_adjoint applied to the cotangent.
    r = jnp.asarray(_random(u.shape, 12))
    grad_u = jax.grad(lambda a: jnp.vdot(ops.blur(a, h), r))(u)
    np.testing.assert_allclose(np.asarray(grad_u), np.asarray(ops.blur_adjoint(r, h)), atol=1e-4)


def test_bad_arguments_raise_clear_errors():
    u = jnp.zeros((1, 8, 8, 1))
    with pytest.raises(ValueError, match="odd"):
        ops.blur(u, jnp.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="larger than the image"):
        ops.blur(u, jnp.zeros((1, 9, 9)))
    with pytest.raises(ValueError, match="boundary"):
        ops.blur(u, jnp.zeros((1, 3, 3)), "reflect")


def test_half_precision_inputs_are_computed_in_float32():
    u = jnp.asarray(np.abs(_random((1, 16, 20, 3), 13)))
    h = jnp.asarray(kernels.gaussian(5, 1.0))[None]
    ref = ops.blur(u, h)
    got = ops.blur(u.astype(jnp.bfloat16), h.astype(jnp.bfloat16))
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(ref), rtol=2e-2, atol=2e-2)
    assert ops.kernel_adjoint(u.astype(jnp.bfloat16), u.astype(jnp.bfloat16), (5, 5)).dtype == jnp.bfloat16


@pytest.mark.parametrize("boundary", ops.BOUNDARIES)
@pytest.mark.parametrize("per_image", [True, False], ids=["kernel_per_image", "shared_kernel"])
def test_blur_operator_dot_products_and_scipy(boundary, per_image):
    (H, W, C), (kh, kw) = SHAPES[0]
    u, r = _random((2, H, W, C), 20, np.float64), _random((2, H, W, C), 21, np.float64)
    h = _random((2, kh, kw) if per_image else (kh, kw), 22, np.float64)
    with jax.enable_x64(True):
        A = ops.Blur(jnp.asarray(h), boundary)
        u_, r_ = jnp.asarray(u), jnp.asarray(r)
        h_each = h if per_image else np.stack([h, h])
        np.testing.assert_allclose(np.asarray(A(u_)), _scipy_blur(u, h_each, boundary), atol=1e-10)
        lhs = float(jnp.vdot(A(u_), r_))
        assert A.kernel_adjoint(u_, r_).shape == h.shape
        np.testing.assert_allclose(float(jnp.vdot(u_, A.adjoint(r_))), lhs, rtol=1e-10)
        np.testing.assert_allclose(float(jnp.vdot(A.kernel, A.kernel_adjoint(u_, r_))), lhs, rtol=1e-10)
        # The kernel adjoint at the residual is the data term's gradient in h.
        g = jnp.asarray(_random(u.shape, 23, np.float64))
        grad = jax.grad(lambda k: 0.5 * jnp.sum((ops.Blur(k, boundary)(u_) - g) ** 2))(A.kernel)
        np.testing.assert_allclose(np.asarray(A.kernel_adjoint(u_, A(u_) - g)), np.asarray(grad),
                                   rtol=1e-9, atol=1e-9)


def test_blur_operator_is_a_pytree_for_jit_vmap_and_grad():
    u = jnp.asarray(_random((3, 12, 14, 2), 24))
    h = jnp.asarray(np.abs(_random((3, 5, 5), 25)))
    A = ops.Blur(h, "zero")
    leaves, treedef = jax.tree.flatten(A)
    assert len(leaves) == 1 and jax.tree.unflatten(treedef, leaves).boundary == "zero"
    calls = []

    @jax.jit
    def apply(op, x):
        calls.append(1)
        return op.adjoint(op(x))

    np.testing.assert_allclose(np.asarray(apply(A, u)), np.asarray(ops.blur_adjoint(ops.blur(u, h, "zero"), h, "zero")),
                               atol=1e-5)
    apply(ops.Blur(2 * h, "zero"), u)  # a new kernel of the same shape: no new trace
    assert len(calls) == 1
    # vmap over a batch of operators (each a [kh, kw] kernel) and their images.
    mapped = jax.vmap(lambda op, x: op(x[None])[0])(ops.Blur(h, "zero"), u)
    np.testing.assert_allclose(np.asarray(mapped), np.asarray(ops.blur(u, h, "zero")), atol=1e-6)
    # grad with respect to the operator: a Blur-shaped cotangent, the kernel's gradient.
    r = jnp.asarray(_random(u.shape, 26))
    dA = jax.grad(lambda op: jnp.vdot(op(u), r))(A)
    assert isinstance(dA, ops.Blur)
    np.testing.assert_allclose(np.asarray(dA.kernel), np.asarray(A.kernel_adjoint(u, r)), rtol=1e-4, atol=1e-4)


def test_blur_operator_rejects_bad_arguments():
    with pytest.raises(ValueError, match="boundary"):
        ops.Blur(jnp.ones((3, 3)), "reflect")
    with pytest.raises(ValueError, match=r"\[kh, kw\] or \[N, kh, kw\]"):
        ops.Blur(jnp.ones((1, 1, 3, 3)))
