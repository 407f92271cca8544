"""Blur operators: convolution of NHWC images with one kernel per image, and its two adjoints.

Conventions (see DESIGN.md):
  * `u`, `g`, `r`: images `[N, H, W, C]`; `h`: kernels `[N, kh, kw]` with odd sizes, shared by the
    channels of an image, centred at element `(kh // 2, kw // 2)`.
  * `blur(u, h, B)` is a true convolution and equals, channel by channel,
    `scipy.signal.convolve2d(u, h, mode="same", boundary=...)` with "wrap" for "circular",
    "symm" for "symmetric" and "fill" for "zero".

How it is computed: the image is padded by the kernel's half-size with the boundary rule, embedded in
an FFT grid large enough that the circular convolution never wraps into the cropped window, multiplied
by the kernel's real FFT (kernel centre rolled to the origin) and cropped back. The circular boundary
needs no padding: its FFT grid is the image itself. Every step is linear, so the adjoints are the same
steps transposed: crop <-> zero-embed, multiply by conj(H) (correlation), padding <-> folding the
border back (derived exactly by `jax.linear_transpose`).

`Blur(h, boundary)` packs the three as one operator object (`A(u)`, `A.adjoint(r)`,
`A.kernel_adjoint(u, r)`), a pytree for solvers written against the blur operator.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

BOUNDARIES = ("circular", "symmetric", "zero")
_NUMPY_PAD_MODE = {"symmetric": "symmetric", "zero": "constant"}


def _check(u_shape, kernel_shape, boundary):
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    if len(u_shape) != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {tuple(u_shape)}")
    kh, kw = kernel_shape[-2:]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel sizes must be odd, got {kh}x{kw}")
    if kh > u_shape[1] or kw > u_shape[2]:
        raise ValueError(f"kernel {kh}x{kw} is larger than the image {u_shape[1]}x{u_shape[2]}")


def fast_len(n: int) -> int:
    """Smallest 5-smooth integer >= n (FFTs of such lengths are fast).

    >>> [fast_len(n) for n in (7, 97, 128)]
    [8, 100, 128]
    """
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def _geometry(image_hw, kernel_hw, boundary):
    """Half-sizes of the padding and the FFT grid for an image and kernel size."""
    (H, W), (kh, kw) = image_hw, kernel_hw
    if boundary == "circular":
        return (0, 0), (H, W)
    ph, pw = kh // 2, kw // 2
    return (ph, pw), (fast_len(H + 2 * ph), fast_len(W + 2 * pw))


def _pad(u, pads, boundary):
    ph, pw = pads
    if ph == 0 and pw == 0:
        return u
    return jnp.pad(u, ((0, 0), (ph, ph), (pw, pw), (0, 0)), mode=_NUMPY_PAD_MODE[boundary])


def _pad_adjoint(x, pads, boundary, image_shape):
    """Transpose of `_pad`: folds (symmetric) or drops (zero) the border back onto the image."""
    if pads == (0, 0):
        return x
    pad = functools.partial(_pad, pads=pads, boundary=boundary)
    (u,) = jax.linear_transpose(pad, jax.ShapeDtypeStruct(image_shape, x.dtype))(x)
    return u


def _kernel_fft(h, grid):
    """Real FFT of kernels `[N, kh, kw]` on `grid`, with the kernel centre moved to the origin."""
    kh, kw = h.shape[-2:]
    dtype = jnp.promote_types(h.dtype, jnp.float32)
    big = jnp.zeros(h.shape[:-2] + tuple(grid), dtype).at[..., :kh, :kw].set(h.astype(dtype))
    big = jnp.roll(big, (-(kh // 2), -(kw // 2)), axis=(-2, -1))
    return jnp.fft.rfft2(big, axes=(-2, -1))[..., None]  # [N, L1, L2 // 2 + 1, 1]


def _image_fft(x, grid):
    # FFTs need float32 or float64: half-precision inputs (bfloat16 compute) are upcast here.
    return jnp.fft.rfft2(x.astype(jnp.promote_types(x.dtype, jnp.float32)), s=grid, axes=(1, 2))


def _inverse(X, grid, pads, hw):
    x = jnp.fft.irfft2(X, s=grid, axes=(1, 2))
    (ph, pw), (H, W) = pads, hw
    return x[:, ph:ph + H, pw:pw + W, :]


def blur(u, h, boundary: str = "symmetric"):
    """Convolve images `u [N, H, W, C]` with kernels `h [N, kh, kw]`: `g = h * u` (same size).

    >>> import jax.numpy as jnp
    >>> from unroll import kernels
    >>> u = jnp.arange(25.0).reshape(1, 5, 5, 1) / 25         # one 5x5 grayscale image
    >>> h = jnp.asarray(kernels.delta(3, shift=(0, 1)))[None]  # a unit impulse one column right
    >>> bool(jnp.allclose(blur(u, h, "circular"), jnp.roll(u, 1, axis=2), atol=1e-6))
    True
    >>> blur(u, jnp.asarray(kernels.gaussian(3, 1.0))[None]).shape
    (1, 5, 5, 1)
    """
    _check(u.shape, h.shape, boundary)
    H, W = u.shape[1:3]
    pads, grid = _geometry((H, W), h.shape[-2:], boundary)
    U = _image_fft(_pad(u, pads, boundary), grid)
    return _inverse(U * _kernel_fft(h.astype(u.dtype), grid), grid, pads, (H, W)).astype(u.dtype)


def blur_adjoint(r, h, boundary: str = "symmetric"):
    """Adjoint of `blur` in the image: `<blur(u, h), r> == <u, blur_adjoint(r, h)>`.

    For the circular boundary this is the correlation `h(-x, -y) * r` of eqs. (15) and (17).

    >>> import jax, jax.numpy as jnp
    >>> from unroll import kernels
    >>> u, r = jax.random.normal(jax.random.key(0), (2, 1, 6, 7, 3))
    >>> h = jnp.asarray(kernels.gaussian(5, 1.0))[None]
    >>> [bool(jnp.allclose(jnp.vdot(blur(u, h, b), r), jnp.vdot(u, blur_adjoint(r, h, b)), rtol=1e-4))
    ...  for b in BOUNDARIES]
    [True, True, True]
    """
    _check(r.shape, h.shape, boundary)
    H, W = r.shape[1:3]
    pads, grid = _geometry((H, W), h.shape[-2:], boundary)
    (ph, pw), (L1, L2) = pads, grid
    # Zero-embed r where `blur` cropped, correlate (conj), then fold the padding back.
    r_big = jnp.pad(r, ((0, 0), (ph, L1 - H - ph), (pw, L2 - W - pw), (0, 0)))
    X = _image_fft(r_big, grid) * jnp.conj(_kernel_fft(h.astype(r.dtype), grid))
    x = jnp.fft.irfft2(X, s=grid, axes=(1, 2))[:, :H + 2 * ph, :W + 2 * pw, :]
    return _pad_adjoint(x, pads, boundary, r.shape).astype(r.dtype)


def kernel_adjoint(u, r, kernel_shape, boundary: str = "symmetric"):
    """Adjoint of `h -> blur(u, h)`: `<blur(u, h), r> == <h, kernel_adjoint(u, r, h.shape[-2:])>`.

    Sums over channels (the kernel is shared by them). Applied to the residual `blur(u, h) - g`
    it is the exact gradient of `1/2 ||h * u - g||^2` with respect to `h` (eqs. 9 and 11).

    >>> import jax, jax.numpy as jnp
    >>> from unroll import kernels
    >>> u, r = jax.random.normal(jax.random.key(1), (2, 1, 9, 8, 3))
    >>> h = jnp.asarray(kernels.gaussian(5, 1.0))[None]
    >>> k = kernel_adjoint(u, r, h.shape)
    >>> k.shape
    (1, 5, 5)
    >>> bool(jnp.allclose(jnp.vdot(blur(u, h), r), jnp.vdot(h, k), rtol=1e-4))
    True
    """
    kh, kw = kernel_shape[-2:]
    _check(u.shape, (kh, kw), boundary)
    H, W = u.shape[1:3]
    pads, grid = _geometry((H, W), (kh, kw), boundary)
    (ph, pw), (L1, L2) = pads, grid
    U = _image_fft(_pad(u, pads, boundary), grid)
    r_big = jnp.pad(r, ((0, 0), (ph, L1 - H - ph), (pw, L2 - W - pw), (0, 0)))
    # Correlation of the padded image with the residual, summed over channels before the inverse FFT.
    X = jnp.sum(jnp.conj(U) * _image_fft(r_big.astype(u.dtype), grid), axis=-1)
    x = jnp.fft.irfft2(X, s=grid, axes=(-2, -1))
    x = jnp.roll(x, (kh // 2, kw // 2), axis=(-2, -1))
    return x[:, :kh, :kw].astype(u.dtype)


@jax.tree_util.register_pytree_node_class
class Blur:
    """The blur operator `A: u -> h * u` with a fixed kernel, as an object: `A(u)` is `blur(u, h, B)`,
    `A.adjoint(r)` its exact adjoint in the image, `A.kernel_adjoint(u, r)` the adjoint of
    `h -> h * u` (applied to the residual `A(u) - g` it is the gradient in h of 1/2 ||h * u - g||^2).

    `kernel` is `[kh, kw]` (one kernel for every image) or `[N, kh, kw]` (one per image). A pytree
    (the kernel is its leaf, the boundary static), so it can be an argument of `jax.jit`, `vmap` and
    `grad`.

    >>> import jax, jax.numpy as jnp
    >>> from unroll import kernels
    >>> A = Blur(jnp.asarray(kernels.gaussian(5, 1.0)), boundary="symmetric")
    >>> u, r = jax.random.normal(jax.random.key(0), (2, 2, 12, 10, 3))
    >>> bool(jnp.allclose(A(u), blur(u, A.kernel[None].repeat(2, 0))))
    True
    >>> bool(jnp.allclose(jnp.vdot(A(u), r), jnp.vdot(u, A.adjoint(r)), rtol=1e-4))
    True
    >>> bool(jnp.allclose(jnp.vdot(A(u), r), jnp.vdot(A.kernel, A.kernel_adjoint(u, r)), rtol=1e-4))
    True
    >>> jax.jit(lambda A, u: A(u))(A, u).shape  # a jit argument
    (2, 12, 10, 3)
    """

    def __init__(self, kernel, boundary: str = "symmetric"):
        if boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
        if jnp.ndim(kernel) not in (2, 3):
            raise ValueError(f"kernel must be [kh, kw] or [N, kh, kw], got shape {jnp.shape(kernel)}")
        self.kernel = kernel
        self.boundary = boundary

    def __call__(self, u):
        """`h * u` for images `[N, H, W, C]`."""
        return blur(u, self.kernel, self.boundary)

    def adjoint(self, r):
        """The adjoint in the image: `<A(u), r> == <u, A.adjoint(r)>`."""
        return blur_adjoint(r, self.kernel, self.boundary)

    def kernel_adjoint(self, u, r):
        """The adjoint of `h -> h * u` at `r`, shaped like the kernel (summed over the images when
        one `[kh, kw]` kernel serves them all)."""
        k = kernel_adjoint(u, r, self.kernel.shape[-2:], self.boundary)
        return k.sum(axis=0) if self.kernel.ndim == 2 else k

    def __repr__(self):
        return f"Blur(kernel shape {tuple(jnp.shape(self.kernel))}, boundary={self.boundary!r})"

    def tree_flatten(self):
        return (self.kernel,), self.boundary

    @classmethod
    def tree_unflatten(cls, boundary, children):
        # No checks: jax rebuilds pytrees with placeholders (tracers, None, object()) as leaves.
        op = object.__new__(cls)
        op.kernel, = children
        op.boundary = boundary
        return op
