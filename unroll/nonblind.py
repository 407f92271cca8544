"""Non-blind deconvolution with a hyper-Laplacian prior, for real captures (no periodic wrap).

`deconvolve(g, h)` minimises, for each image and channel,

    lam/2 ||M (h * u) - g||^2 + sum_i |D_i u|^alpha,          D = horizontal, vertical differences,

over an image `u` on a *larger* domain than the observation: `g` (H x W) is the part of `h * u` that
the camera saw, M the mask of those pixels. The unknown scene beyond the frame is part of the
solution (the "unknown boundary" model of Almeida and Figueiredo 2013, Reeves 2005), so nothing is
assumed about it: no periodic wrap (the ringing of a plain FFT deconvolution), no mirror, no taper.
The extended domain is at least (H + kh - 1) x (W + kw - 1), rounded up to a fast FFT size; its
circular wrap falls only on unobserved pixels, where the prior alone decides.

Solved by half-quadratic splitting (Krishnan and Fergus 2009) with an extra ADMM split for the mask:
w_i ~ D_i u (HQS: weight beta, increased geometrically from `beta_min` to `beta_max` by
`beta_rate`), v = h * u (ADMM with weight `gamma` and a scaled dual d). One iteration:

    w_i = argmin beta/2 (w - D_i u)^2 + |w|^alpha        GST_p (`unroll.shrinkage.gst`), elementwise
    v   = (lam M g + gamma (h * u - d)) / (lam M + gamma)   elementwise
    u   = F^-1[(gamma conj(K) F(v + d) + beta sum_i conj(D_i) F(w_i)) / (gamma |K|^2 + beta sum_i |D_i|^2)]
    d   = d + v - h * u

`inner` iterations per beta. Everything is FFTs and elementwise maps, jitted and batched over
images and channels (one kernel per image). Defaults: alpha = 2/3 and the beta schedule 1 ... 256 by
2 sqrt(2) are Krishnan and Fergus's; the data weight `lam` = 7000 and `inner` = 3 were chosen on
synthetic data only (14 grayscale 255x255 RSSCN7 *training* crops, each the valid part of the blur of a
larger crop by an `unroll.kernels.motion` kernel of size 13-27, noise std 0.005, 8-bit quantisation;
PSNR on the 15 px-cropped interior, blurred 25.06 dB): lam 1000 / 2000 / 3000 / 5000 / 7000 / 10000
gave 28.43 / 29.56 / 30.23 / 30.96 / 31.19 / 30.95 dB; alpha = 0.8 with lam 5000 gave 31.20, with
lam 7000 31.02; inner 1 instead of 3 lost 0.24 dB, 5 gained nothing; beta_max 1024 lost 0.09 dB. The
periodic model (`boundary="circular"`) is far worse on real captures (ringing from the frame edge).

`wiener` is the classical baseline (circular, constant noise-to-signal ratio).

>>> import numpy as np
>>> from unroll import kernels, nonblind, ops
>>> rng = np.random.default_rng(0)
>>> sharp = np.kron(rng.random((8, 8)), np.ones((8, 8))).astype(np.float32)  # 64x64 blocks
>>> h = kernels.motion(9, rng)
>>> g = np.asarray(ops.blur(sharp[None, ..., None], h[None]))[0, ..., 0]
>>> u = nonblind.deconvolve(g, h)
>>> bool(np.mean((u - sharp) ** 2) < np.mean((g - sharp) ** 2) / 10)
True
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from unroll import ops, shrinkage

LAM = 7000.0
ALPHA = 2.0 / 3.0


def betas(beta_min: float = 1.0, beta_max: float = 256.0, beta_rate: float = 2 * math.sqrt(2)):
    """The HQS continuation: beta_min, beta_min * rate, ... while <= beta_max (as in Krishnan's code)."""
    if not (beta_min > 0 and beta_max >= beta_min and beta_rate > 1):
        raise ValueError(f"need 0 < beta_min <= beta_max and beta_rate > 1, got {beta_min}, "
                         f"{beta_max}, {beta_rate}")
    out, b = [], float(beta_min)
    while b <= beta_max * (1 + 1e-9):
        out.append(b)
        b *= beta_rate
    return np.array(out, np.float32)


def _otf(h, grid):
    """rfft2 of kernels `[N, kh, kw]` on `grid` with the centre (kh // 2, kw // 2) at the origin."""
    kh, kw = h.shape[-2:]
    big = jnp.zeros(h.shape[:-2] + tuple(grid), jnp.float32).at[..., :kh, :kw].set(h)
    big = jnp.roll(big, (-(kh // 2), -(kw // 2)), axis=(-2, -1))
    return jnp.fft.rfft2(big)


def _diff_otfs(grid):
    """rfft2 of the forward differences u(y, x+1) - u(y, x) and u(y+1, x) - u(y, x) (circular)."""
    dx = jnp.zeros(grid, jnp.float32).at[0, 0].set(-1.0).at[0, -1].set(1.0)
    dy = jnp.zeros(grid, jnp.float32).at[0, 0].set(-1.0).at[-1, 0].set(1.0)
    return jnp.fft.rfft2(dx), jnp.fft.rfft2(dy)


@functools.partial(jax.jit, static_argnames=("alpha", "inner", "boundary", "gst_iterations"))
def _deconvolve(g, h, lam, beta_schedule, gamma, alpha, inner, boundary, gst_iterations):
    """g [B, H, W] (B = images x channels), h [B, kh, kw], lam [B] -> u [B, H, W]."""
    B, H, W = g.shape
    kh, kw = h.shape[-2:]
    if boundary == "unknown":
        ry, rx = kh // 2, kw // 2
        grid = (ops.fast_len(H + kh - 1), ops.fast_len(W + kw - 1))
    else:  # circular: the observation is the whole (periodic) domain
        ry = rx = 0
        grid = (H, W)
    pads = ((0, 0), (ry, grid[0] - H - ry), (rx, grid[1] - W - rx))
    mask = jnp.pad(jnp.ones((1, H, W), jnp.float32), pads)
    gm = jnp.pad(g, pads)
    u0 = jnp.pad(g, pads, mode="edge")

    K = _otf(h, grid)
    DX, DY = _diff_otfs(grid)
    KK = jnp.abs(K) ** 2
    DD = jnp.abs(DX) ** 2 + jnp.abs(DY) ** 2
    lam = lam[:, None, None]
    gam = gamma * lam

    def fft(x):
        return jnp.fft.rfft2(x)

    def ifft(X):
        return jnp.fft.irfft2(X, s=grid)

    def step(carry, beta):
        u, d = carry
        U = fft(u)
        wx = shrinkage.gst(ifft(U * DX), 1.0 / beta, alpha, iterations=gst_iterations)
        wy = shrinkage.gst(ifft(U * DY), 1.0 / beta, alpha, iterations=gst_iterations)
        Wsum = jnp.conj(DX) * fft(wx) + jnp.conj(DY) * fft(wy)
        for _ in range(inner):
            Ku = ifft(fft(u) * K)
            v = (lam * mask * gm + gam * (Ku - d)) / (lam * mask + gam)
            if boundary == "circular":
                v, d = g, jnp.zeros_like(d)  # v = g exactly: plain HQS
            U = (gam * jnp.conj(K) * fft(v + d) + beta * Wsum) / (gam * KK + beta * DD)
            u = ifft(U)
            d = d + v - ifft(U * K)
        return (u, d), None

    (u, _), _ = lax.scan(step, (u0, jnp.zeros_like(u0)), beta_schedule)
    return u[:, ry:ry + H, rx:rx + W]


def _as_batch(g, h):
    """(g [N, H, W, C], h [N, kh, kw], restore) from [H, W], [H, W, C] or [N, H, W, C] inputs."""
    g = jnp.asarray(g, jnp.float32)
    h = jnp.asarray(h, jnp.float32)
    if g.ndim == 2:
        g4, restore = g[None, ..., None], lambda u: u[0, ..., 0]
    elif g.ndim == 3:
        g4, restore = g[None], lambda u: u[0]
    elif g.ndim == 4:
        g4, restore = g, lambda u: u
    else:
        raise ValueError(f"g must be [H, W], [H, W, C] or [N, H, W, C], got shape {g.shape}")
    if h.ndim == 2:
        h = jnp.broadcast_to(h, (g4.shape[0],) + h.shape)
    if h.ndim != 3 or h.shape[0] != g4.shape[0]:
        raise ValueError(f"h must be [kh, kw] or [N, kh, kw] with N = {g4.shape[0]}, got {h.shape}")
    kh, kw = h.shape[-2:]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel sizes must be odd, got {kh}x{kw}")
    return g4, h, restore


def deconvolve(g, h, *, lam=LAM, alpha: float = ALPHA, beta_min: float = 1.0,
               beta_max: float = 256.0, beta_rate: float = 2 * math.sqrt(2), inner: int = 3,
               gamma: float = 1.0, boundary: str = "unknown", gst_iterations: int = 6):
    """Restore `g` ([H, W], [H, W, C] or [N, H, W, C], values about [0, 1]) blurred by the true
    convolution kernel(s) `h` ([kh, kw] or [N, kh, kw], odd sizes, centre at (kh // 2, kw // 2), as
    `unroll.ops.blur`). Returns u of g's shape (not clipped).

    `lam`: data weight (scalar or one per image, [N]); `alpha`: prior exponent (0 < alpha <= 1);
    `beta_min`, `beta_max`, `beta_rate`: the HQS continuation; `inner`: iterations per beta;
    `gamma`: ADMM weight of the split v = h * u relative to lam; `boundary`: "unknown" (the scene
    beyond the frame is solved for, no wrap) or "circular" (plain Krishnan-Fergus, periodic)."""
    if boundary not in ("unknown", "circular"):
        raise ValueError(f"boundary must be 'unknown' or 'circular', got {boundary!r}")
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    if inner < 1 or gamma <= 0:
        raise ValueError(f"need inner >= 1 and gamma > 0, got {inner}, {gamma}")
    g4, h, restore = _as_batch(g, h)
    N, H, W, C = g4.shape
    if h.shape[1] > H or h.shape[2] > W:
        raise ValueError(f"kernel {h.shape[1:]} is larger than the image {(H, W)}")
    lam = jnp.broadcast_to(jnp.asarray(lam, jnp.float32), (N,))
    if not bool(jnp.all(lam > 0)):
        raise ValueError(f"lam must be positive, got {lam}")
    u = deconvolve_batch(g4, h, lam=lam, alpha=alpha, beta_min=beta_min, beta_max=beta_max,
                         beta_rate=beta_rate, inner=inner, gamma=gamma, boundary=boundary,
                         gst_iterations=gst_iterations)
    return restore(u)


def deconvolve_batch(g, h, *, lam=LAM, alpha: float = ALPHA, beta_min: float = 1.0,
                     beta_max: float = 256.0, beta_rate: float = 2 * math.sqrt(2), inner: int = 3,
                     gamma: float = 1.0, boundary: str = "unknown", gst_iterations: int = 6):
    """`deconvolve` for `g [N, H, W, C]` and `h [N, kh, kw]` without its checks of values, so it
    can be traced inside a jitted function (e.g. MGSTNet's u_0, `image_init="nonblind"`); the
    options are `deconvolve`'s, the shapes are the caller's to get right.

    >>> import jax, jax.numpy as jnp
    >>> g, h = jnp.full((2, 16, 16, 3), 0.5), jnp.full((2, 5, 5), 1 / 25)
    >>> u = jax.jit(deconvolve_batch)(g, h)  # a constant image is its own restoration
    >>> u.shape, bool(jnp.allclose(u, 0.5, atol=1e-4))
    ((2, 16, 16, 3), True)
    """
    N, H, W, C = g.shape
    lam = jnp.broadcast_to(jnp.asarray(lam, jnp.float32), (N,))
    h = h / jnp.sum(h, axis=(-2, -1), keepdims=True)
    gb = jnp.moveaxis(g, -1, 1).reshape(N * C, H, W)
    hb = jnp.repeat(h, C, axis=0)
    lb = jnp.repeat(lam, C)
    u = _deconvolve(gb, hb, lb, jnp.asarray(betas(beta_min, beta_max, beta_rate)), float(gamma),
                    float(alpha), int(inner), boundary, int(gst_iterations))
    return jnp.moveaxis(u.reshape(N, C, H, W), 1, -1)


@jax.jit
def _wiener(g, h, nsr):
    B, H, W = g.shape
    K = _otf(h, (H, W))
    U = jnp.conj(K) * jnp.fft.rfft2(g) / (jnp.abs(K) ** 2 + nsr)
    return jnp.fft.irfft2(U, s=(H, W))


def wiener(g, h, nsr: float = 1e-2):
    """The classical baseline: circular Wiener filter conj(K) G / (|K|^2 + nsr), constant
    noise-to-signal ratio `nsr`. Same shapes as `deconvolve`."""
    g4, h, restore = _as_batch(g, h)
    N, H, W, C = g4.shape
    gb = jnp.moveaxis(g4, -1, 1).reshape(N * C, H, W)
    u = _wiener(gb, jnp.repeat(h, C, axis=0), jnp.float32(nsr))
    return restore(jnp.moveaxis(u.reshape(N, C, H, W), 1, -1))
