"""The unrolled gradient steps of MGSTNet and the kernel normalisation.

Step-size scaling (so that one step size suits every image size):
  * image step (IGDM, eq. 17): the gradient of the *summed* data term 1/2 ||h * u - g||^2. Its
    Lipschitz constant does not depend on the image size: for the circular and zero boundaries it is
    <= ||h||_1^2 = 1 for a normalised kernel (rho in (0, 2) descends); the symmetric boundary folds
    the padding back onto the border, which raises it up to 4 for off-centre kernels (measured: 1.4-2
    for Levin's kernels), so there rho <= 0.5 is the safe choice.
  * kernel step (KGDM, eq. 11): the gradient of the *mean* data term 1/(2 N_obs) ||h * u - g||^2,
    N_obs = H * W * C. The summed term's curvature in h grows with the number of pixels (every pixel
    is an observation of the same kh x kw unknowns); the mean's is about kh kw mean(u^2) and does not
    depend on H, W or C. So mu is the paper's mu_k up to the factor N_obs.
"""

from __future__ import annotations

import jax.numpy as jnp

from unroll import ops


def data_term(u, h, g, boundary: str = "symmetric"):
    """1/2 ||h * u - g||^2 per image, `[N]`.

    >>> import jax.numpy as jnp
    >>> from unroll import kernels
    >>> u = jnp.ones((2, 8, 8, 3))  # flat images: a normalised blur leaves them unchanged
    >>> h = jnp.asarray(kernels.gaussian(3, 1.0))[None].repeat(2, axis=0)
    >>> [round(v, 6) for v in data_term(u, h, u).tolist()]
    [0.0, 0.0]
    >>> round(float(data_term(u, h, 0.9 * u)[0]), 4)  # 1/2 * 192 pixels * 0.1^2
    0.96
    """
    return 0.5 * jnp.sum((ops.blur(u, h, boundary) - g) ** 2, axis=(1, 2, 3))


def kernel_step(h, u, g, mu, boundary: str = "symmetric"):
    """KGDM, eq. (11): s = h - mu * grad_h [1/(2 H W C) ||h * u - g||^2].

    >>> import jax, jax.numpy as jnp
    >>> from unroll import kernels
    >>> u = jax.random.uniform(jax.random.key(0), (1, 16, 16, 3))
    >>> h_true = jnp.asarray(kernels.gaussian(5, 1.0))[None]
    >>> g = ops.blur(u, h_true)
    >>> h = jnp.asarray(kernels.uniform(5))[None]
    >>> grad = jax.grad(lambda h: data_term(u, h, g).sum() / (16 * 16 * 3))(h)
    >>> bool(jnp.allclose(kernel_step(h, u, g, 0.5), h - 0.5 * grad, atol=1e-7))
    True
    >>> bool(jnp.allclose(kernel_step(h_true, u, g, 0.5), h_true, atol=1e-6))  # a fixed point
    True
    """
    n_obs = u.shape[1] * u.shape[2] * u.shape[3]
    A = ops.Blur(h, boundary)
    grad = A.kernel_adjoint(u, A(u) - g) / n_obs
    return h - _per_image(mu, h.ndim) * grad


def image_step(u, h, g, rho, boundary: str = "symmetric"):
    """IGDM, eq. (17): r = u - rho * h(-x, -y) * (h * u - g), the gradient of 1/2 ||h * u - g||^2.

    >>> import jax, jax.numpy as jnp
    >>> from unroll import kernels
    >>> u_true = jax.random.uniform(jax.random.key(0), (1, 16, 16, 3))
    >>> h = jnp.asarray(kernels.gaussian(5, 1.0))[None]
    >>> g = ops.blur(u_true, h)
    >>> grad = jax.grad(lambda u: data_term(u, h, g).sum())(g)
    >>> bool(jnp.allclose(image_step(g, h, g, 0.5), g - 0.5 * grad, atol=1e-6))
    True
    >>> bool(jnp.allclose(image_step(u_true, h, g, 0.5), u_true, atol=1e-6))  # a fixed point
    True
    """
    A = ops.Blur(h, boundary)
    return u - _per_image(rho, u.ndim) * A.adjoint(A(u) - g)


def normalize_kernel(h, eps: float = 1e-8):
    """Eq. (14) with the physical constraints: h >= 0 (ReLU) and sum(h) = 1 per kernel `[N, kh, kw]`.

    A kernel that the ReLU zeroes entirely becomes uniform rather than 0/0.

    >>> import jax.numpy as jnp
    >>> normalize_kernel(jnp.array([[[1.0, -1.0], [1.0, 2.0]]])).tolist()
    [[[0.25, 0.0], [0.25, 0.5]]]
    >>> normalize_kernel(-jnp.ones((1, 3, 3)))[0, 0].tolist()  # all negative: uniform
    [0.1111111119389534, 0.1111111119389534, 0.1111111119389534]
    """
    h = jnp.maximum(h, 0)
    total = jnp.sum(h, axis=(-2, -1), keepdims=True)
    uniform = jnp.full_like(h, 1.0 / (h.shape[-1] * h.shape[-2]))
    return jnp.where(total > eps, h / jnp.maximum(total, eps), uniform)


def _per_image(step, ndim):
    """A scalar step, or one step per image `[N]`, broadcast against an `ndim` array."""
    step = jnp.asarray(step)
    return step.reshape(step.shape + (1,) * (ndim - step.ndim)) if step.ndim else step
