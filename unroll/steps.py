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
    return h - per_image(mu, h.ndim) * grad


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
    return u - per_image(rho, u.ndim) * A.adjoint(A(u) - g)


def closed_form_image_step(z, h, g, beta, boundary: str = "symmetric", refine: int = 3):
    """The image step solved exactly (an alternative to IGDM, beyond the paper):

        r = argmin_u 1/2 ||h * u - g||^2 + beta/2 ||u - z||^2,
        i.e. (A^T A + beta I) r = A^T g + beta z,          A = blur with h and `boundary`,

    the proximal operator of the data term at `z` (the data module of USRNet, a Wiener filter
    around `z`). Small `beta` deconvolves hard, large `beta` stays at `z`; `beta` is a scalar or one
    per image `[N]`. For the circular boundary A is diagonal in Fourier space and
    r = F^-1[(conj(K) G + beta Z) / (|K|^2 + beta)] exactly. For "symmetric" and "zero" that formula
    is applied on a domain extended by the kernel size with the boundary rule (so that the FFT's
    wrap-around falls a kernel width away from the frame), then `refine` iterations of conjugate
    gradients on the exact normal equations, preconditioned by the circular solve, correct the
    border (every step linear, so jax.grad differentiates through it).

    >>> import jax, jax.numpy as jnp
    >>> from unroll import kernels
    >>> u_true = jax.random.uniform(jax.random.key(0), (1, 16, 16, 1))
    >>> h = jnp.asarray(kernels.gaussian(5, 0.6))[None]
    >>> g = ops.blur(u_true, h, "circular")
    >>> r = closed_form_image_step(g, h, g, 1e-6, "circular")  # almost no prior: the inverse filter
    >>> bool(jnp.abs(r - u_true).max() < 1e-4)
    True
    >>> bool(jnp.allclose(closed_form_image_step(g, h, g, 1e6), g, atol=1e-5))  # beta large: r = z
    True
    """
    ops._check(g.shape, h.shape, boundary)
    H, W = g.shape[1:3]
    kh, kw = h.shape[-2:]
    dtype = jnp.promote_types(g.dtype, jnp.float32)
    z, g, h = z.astype(dtype), g.astype(dtype), h.astype(dtype)
    b = per_image(beta, 4).astype(dtype)
    if boundary == "circular":
        return _circular_solve(g, z, h, b, (0, 0), "circular")
    x = _circular_solve(g, z, h, b, (min(kh, H), min(kw, W)), boundary)
    # Preconditioned conjugate gradients on (A^T A + beta I) x = A^T g + beta z.
    def normal(v):
        return ops.blur_adjoint(ops.blur(v, h, boundary), h, boundary) + b * v

    def precondition(v):  # (A_c^T A_c + beta I)^-1 for the circular A_c: symmetric positive definite
        return _circular_solve(v, jnp.zeros_like(v), h, b, (0, 0), "circular", normal_rhs=True)

    def dot(a, c):
        return jnp.sum(a * c, axis=(1, 2, 3), keepdims=True)

    res = ops.blur_adjoint(g, h, boundary) + b * z - normal(x)
    y = precondition(res)
    p, ry = y, dot(res, y)
    for _ in range(refine):
        q = normal(p)
        step = _safe_divide(ry, dot(p, q))
        x, res = x + step * p, res - step * q
        y = precondition(res)
        ry_new = dot(res, y)
        p, ry = y + _safe_divide(ry_new, ry) * p, ry_new
    return x


def _safe_divide(a, b, tiny: float = 1e-20):
    """a / b, and 0 where b <= tiny (a converged CG: a flat image has nothing left to correct),
    with finite derivatives there too (the division never sees the tiny b)."""
    ok = b > tiny
    return jnp.where(ok, a / jnp.where(ok, b, 1.0), 0.0)


def _circular_solve(g, z, h, b, pads, boundary, normal_rhs: bool = False):
    """F^-1[(conj(K) G + beta Z) / (|K|^2 + beta)] on the images extended by `pads` with the
    `boundary` rule (then zeros up to a fast FFT size), cropped back; with `normal_rhs`,
    F^-1[G / (|K|^2 + beta)] (`g` is already A^T g + beta z)."""
    H, W = g.shape[1:3]
    grid = (ops.fast_len(H + 2 * pads[0]), ops.fast_len(W + 2 * pads[1])) if pads != (0, 0) else (H, W)

    def extend(x):
        x = ops._pad(x, pads, boundary)
        return jnp.pad(x, ((0, 0), (0, grid[0] - x.shape[1]), (0, grid[1] - x.shape[2]), (0, 0)))

    K = ops._kernel_fft(h, grid)
    G = ops._image_fft(extend(g), grid)
    numerator = G if normal_rhs else jnp.conj(K) * G + b * ops._image_fft(extend(z), grid)
    return ops._inverse(numerator / (jnp.abs(K) ** 2 + b), grid, pads, (H, W))


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


def per_image(step, ndim):
    """A scalar step, or one step per image `[N]`, broadcast against an `ndim` array."""
    step = jnp.asarray(step)
    return step.reshape(step.shape + (1,) * (ndim - step.ndim)) if step.ndim else step
