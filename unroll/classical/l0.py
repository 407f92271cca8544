"""Coarse-to-fine blind deconvolution with an L0 gradient prior (Xu et al. 2013, Pan et al. 2014 style).

`blind_deconvolve(g, kernel_size)` estimates one convolution kernel per image, then restores the
image with the non-blind hyper-Laplacian step (`unroll.nonblind.deconvolve`).

Per scale (images and kernels shrunk by `ratio` = 1/sqrt(2) per scale, coarsest kernel >= 5 px),
`iterations` alternations of:

  1. Intermediate latent image, L0 gradients (edge-promoting: sharp edges, flat regions, so that the
     no-blur solution is not favoured):  min_S ||M (h * S) - B||^2 + lam ||grad S||_0, by
     half-quadratic splitting with beta from 2 lam to `beta_max` (x2 per step): w = grad S where
     |grad S|^2 >= lam / beta (jointly over x and y) else 0, then S by FFT; plus an ADMM split
     v = h * S for the mask M. Default (`boundary="periodic"`): B is the blurred image extended
     periodically (below) and M = 1; `boundary="unknown"`: B zero-padded, M the observed pixels
     (the unknown-boundary model of `unroll.nonblind`).
  2. Kernel, in the gradient domain with a penalty: min_h sum_i ||M (d_i S * h) - d_i B||^2 + gamma
     ||h||^2 over the k x k support, by `cg_iterations` of conjugate gradients (the normal equations
     by FFT on the extended domain), then cleanup: negative values and values below `threshold` x max
     set to 0, renormalised to sum 1.
  3. lam <- max(lam / `lam_decay`, `lam_min`) (continuation, carried across scales).

Between scales the kernel is recentred (centre of mass to the window centre, blind deconvolution
fixes it only up to a shift) and bilinearly upsampled. The latent step sees the blurred image
extended periodically by linear ramps between opposite edges (`periodic_extend`, after Liu and Jia
2008 as in Pan et al.'s code), the kernel step only gradients of observed pixels.

Settings: Pan et al.'s published L0 code (lam 4e-3 divided by 1.1 per iteration down to 1e-4,
gamma 2, kernel threshold 0.05, 5 iterations per scale, scales 1/sqrt(2) apart, 20 CG iterations).
Variants were compared on synthetic data only, never on Levin: 8 grayscale 255x255 crops of RSSCN7
*training* scenes, each the valid part of the blur of a larger crop by an `unroll.kernels.motion`
kernel of size 15-27, noise std 0.005, 8-bit quantisation; PSNR by the Levin protocol, true-kernel
non-blind 29.82 dB. Pan's settings with the masked (unknown-boundary) latent step: 25.53 dB, MNC
0.725; 10 iterations per scale 25.58; lam 1e-2 25.27; 50 CG iterations 25.34; ADMM weight 10 / 0.3
23.13 / 25.64; the periodic extension 25.91 dB, MNC 0.746, error ratio <= 2 on 5 of 8: the default.
The final non-blind step keeps `unroll.nonblind`'s defaults (one setting for every method, so that
the error ratio compares like with like): on 12 other synthetic images with the estimated kernels,
its lam 1000 / 3000 / 7000 gave 25.07 / 25.03 / 24.84 dB, too small a difference to specialise it.

Levin et al. 2009 (32 images, SelfDeblur protocol, true kernel sizes given as to the published
methods; `python -m experiments.levin --method=classical`): 32.69 dB / SSIM 0.934, error ratio
<= 2 on 81 % and <= 3 on 91 % of the images, kernel MNC 0.844 (the true-kernel ceiling with the same
non-blind step: 34.56 dB). Speed on a shared 2-core CPU: 0.95 s per image in a warm batch of 4
(255x255, kernel 19), plus about 25 s of compilation per kernel size.

Input forms: [H, W], [N, H, W], [H, W, C], [N, H, W, C] (`unroll.classical.layout`); the kernel of
a colour image is estimated from its luminance and every band deconvolved with it. Real aerial
scenes make the solver fail often (a diffuse kernel, ringing 10-15 dB below the input):
`never_worse` / `blind_deconvolve(..., fallback=True)` check each result without ground truth
(`unroll.classical.check`) and retry a larger, then smaller kernel sizes, in the end returning the
input.

Everything is jitted per (batch, image size, kernel size) and batched over images. The hard
thresholds make the solver piecewise constant in lam, so it is not tuned by jax.grad (the unrolled
Haar / GST_p solver in `unroll.classical.unrolled` is).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from unroll import kernels, nonblind, ops
from unroll.classical import check
from unroll.classical.layout import as_batch, from_batch, luminance


@dataclasses.dataclass(frozen=True)
class L0Params:
    lam: float = 4e-3  # initial L0 gradient weight
    lam_decay: float = 1.1  # lam /= lam_decay after every iteration
    lam_min: float = 1e-4
    gamma: float = 2.0  # kernel l2 penalty
    threshold: float = 0.05  # kernel cleanup: values below threshold * max are removed
    iterations: int = 5  # per scale
    ratio: float = 1 / math.sqrt(2)  # image / kernel size ratio between scales
    min_kernel: int = 5  # coarsest kernel size
    beta_max: float = 1e5
    cg_iterations: int = 20
    admm_gamma: float = 1.0  # weight of the split v = h * S (relative to the data term)
    boundary: str = "periodic"  # latent step: "periodic" (smooth wrap of B, Pan) or "unknown" (masked)


DEFAULTS = L0Params()


def _odd(x: float) -> int:
    return max(3, 2 * int(round((x - 1) / 2)) + 1)


def pyramid(image_hw, kernel_size: int, ratio: float, min_kernel: int):
    """[(H_s, W_s, k_s)] from coarse to fine: kernel sizes odd(kernel_size ratio^s) while >= min_kernel,
    image sizes scaled alike (at least twice the kernel)."""
    H, W = image_hw
    out, s = [], 0
    while True:
        f = ratio ** s
        k = kernel_size if s == 0 else _odd(kernel_size * f)
        if s > 0 and k < min_kernel:
            break
        out.append((max(2 * k, int(round(H * f))), max(2 * k, int(round(W * f))), k))
        s += 1
        if k <= 3:
            break
    return out[::-1]


def _otf(h, grid):
    return nonblind._otf(h, grid)


def _grads(x):
    """Circular forward differences of [..., L1, L2]."""
    return jnp.roll(x, -1, axis=-1) - x, jnp.roll(x, -1, axis=-2) - x


def _latent_l0(B, mask, K, lam, p: L0Params, grid):
    """min_S ||M (h * S) - B||^2 + lam ||grad S||_0 on the extended grid. B, mask: [N, L1, L2]
    (B zero outside the mask), K: [N, L1, L2 // 2 + 1], lam [N]. Returns S [N, L1, L2]."""
    DX, DY = nonblind._diff_otfs(grid)
    DD = jnp.abs(DX) ** 2 + jnp.abs(DY) ** 2
    KK = jnp.abs(K) ** 2
    lam = lam[:, None, None]
    gam = p.admm_gamma

    def fft(x):
        return jnp.fft.rfft2(x)

    def ifft(X):
        return jnp.fft.irfft2(X, s=grid)

    n_beta = max(1, int(math.ceil(math.log2(p.beta_max / (2 * p.lam_min)))))
    # beta_j = 2 lam 2^j, stopped at beta_max (per image: lam differs by image only through the
    # schedule, so a mask of active steps keeps one static loop length).
    def step(carry, j):
        S, d = carry
        beta = 2 * lam * 2.0 ** j
        active = beta <= p.beta_max
        gx, gy = _grads(S)
        keep = gx ** 2 + gy ** 2 >= lam / beta
        wx, wy = jnp.where(keep, gx, 0), jnp.where(keep, gy, 0)
        KS = ifft(fft(S) * K)
        v = (mask * B + gam * (KS - d)) / (mask + gam)
        num = gam * jnp.conj(K) * fft(v + d) + beta * (jnp.conj(DX) * fft(wx) + jnp.conj(DY) * fft(wy))
        Snew = ifft(num / (gam * KK + beta * DD + 1e-8))
        dnew = d + v - ifft(fft(Snew) * K)
        return (jnp.where(active, Snew, S), jnp.where(active, dnew, d)), None

    S0 = B + (1 - mask) * jnp.sum(B * mask, axis=(-2, -1), keepdims=True) / jnp.sum(mask)
    (S, _), _ = lax.scan(step, (S0, jnp.zeros_like(B)), jnp.arange(n_beta, dtype=jnp.float32))
    return S


def periodic_extend(g, grid):
    """Place g [N, H, W] at the origin of `grid` and fill the rest with linear ramps between opposite
    edges, so that the extended image is periodic without jumps (a simple form of Liu and Jia's
    boundary extension): a circular model then sees no false edges at the frame."""
    N, H, W = g.shape
    L1, L2 = grid
    n = L2 - W
    t = jnp.arange(1, n + 1, dtype=g.dtype) / (n + 1)
    rows = g[:, :, -1:] + (g[:, :, :1] - g[:, :, -1:]) * t
    x = jnp.concatenate([g, rows], axis=2)
    n = L1 - H
    t = (jnp.arange(1, n + 1, dtype=g.dtype) / (n + 1))[:, None]
    cols = x[:, -1:, :] + (x[:, :1, :] - x[:, -1:, :]) * t
    return jnp.concatenate([x, cols], axis=1)


def _embed_kernel(h, grid):
    kh, kw = h.shape[-2:]
    big = jnp.zeros(h.shape[:-2] + tuple(grid), h.dtype).at[..., :kh, :kw].set(h)
    return jnp.roll(big, (-(kh // 2), -(kw // 2)), axis=(-2, -1))


def _crop_kernel(x, k):
    r = k // 2
    return jnp.roll(x, (r, r), axis=(-2, -1))[..., :k, :k]


def _estimate_kernel(S, B, mask, h0, p: L0Params, grid):
    """min_h sum_i ||M (d_i S * h) - d_i B||^2 + gamma ||h||^2 over the support of h0, by CG from h0."""
    k = h0.shape[-1]
    sx, sy = _grads(S)
    bx, by = _grads(B)
    # gradient of B only where both pixels are observed
    mx = mask * jnp.roll(mask, -1, axis=-1)
    my = mask * jnp.roll(mask, -1, axis=-2)
    SX, SY = jnp.fft.rfft2(sx), jnp.fft.rfft2(sy)

    def conv(X, h):
        return jnp.fft.irfft2(X * jnp.fft.rfft2(_embed_kernel(h, grid)), s=grid)

    def corr(X, r):
        return _crop_kernel(jnp.fft.irfft2(jnp.conj(X) * jnp.fft.rfft2(r), s=grid), k)

    def A(h):
        return corr(SX, mx * conv(SX, h)) + corr(SY, my * conv(SY, h)) + p.gamma * h

    b = corr(SX, mx * bx) + corr(SY, my * by)

    def dot(a, c):
        return jnp.sum(a * c, axis=(-2, -1), keepdims=True)

    x = h0
    r = b - A(x)
    d = r
    rr = dot(r, r)

    def body(_, carry):
        x, r, d, rr = carry
        Ad = A(d)
        a = rr / jnp.maximum(dot(d, Ad), 1e-30)
        x = x + a * d
        r = r - a * Ad
        rr_new = dot(r, r)
        d = r + rr_new / jnp.maximum(rr, 1e-30) * d
        return x, r, d, rr_new

    x, *_ = lax.fori_loop(0, p.cg_iterations, body, (x, r, d, rr))
    return cleanup(x, p.threshold)


def cleanup(h, threshold):
    """Negative values and values below threshold * max removed, renormalised to sum 1."""
    h = jnp.maximum(h, 0)
    h = jnp.where(h < threshold * jnp.max(h, axis=(-2, -1), keepdims=True), 0, h)
    s = jnp.sum(h, axis=(-2, -1), keepdims=True)
    k = h.shape[-1]
    delta = jnp.zeros_like(h).at[..., k // 2, k // 2].set(1.0)
    return jnp.where(s > 0, h / jnp.maximum(s, 1e-30), delta)


def recentre(h):
    """Shift each kernel by an integer so that its centre of mass is nearest the window centre."""
    k = h.shape[-1]
    r = k // 2
    idx = jnp.arange(k, dtype=h.dtype)
    mass = jnp.sum(h, axis=(-2, -1)) + 1e-12
    cy = jnp.sum(h * idx[:, None], axis=(-2, -1)) / mass
    cx = jnp.sum(h * idx[None, :], axis=(-2, -1)) / mass
    dy = jnp.clip(jnp.round(cy) - r, -r, r).astype(jnp.int32)
    dx = jnp.clip(jnp.round(cx) - r, -r, r).astype(jnp.int32)
    hp = jnp.pad(h, ((0, 0), (r, r), (r, r)))

    def one(hp, dy, dx):
        return lax.dynamic_slice(hp, (r + dy, r + dx), (k, k))

    return jax.vmap(one)(hp, dy, dx)


def _resize_kernel(h, size):
    """Bilinear rescale of kernels [N, k, k] to [N, size, size] about the centre, renormalised."""
    k = h.shape[-1]
    s = size / k
    out = jax.image.scale_and_translate(h, (h.shape[0], size, size), (1, 2), jnp.array([s, s]),
                                        jnp.array([0.0, 0.0]), "linear", antialias=False)
    return cleanup(out, 0.0)


@functools.partial(jax.jit, static_argnames=("geometry", "p"))
def _estimate(g, lam0, geometry, p: L0Params):
    """g [N, H, W] -> kernel [N, k, k]. geometry: ((H_s, W_s, k_s), ...) coarse to fine."""
    N, H, W = g.shape
    lam = jnp.full((N,), lam0, jnp.float32)
    h = None
    for hs, ws, ks in geometry:
        gs = g if (hs, ws) == (H, W) else jax.image.resize(g, (N, hs, ws), "linear", antialias=True)
        if h is None:
            h = jnp.zeros((N, ks, ks), jnp.float32).at[:, ks // 2, ks // 2 - 1:ks // 2 + 2].set(0.5)
            h = h.at[:, ks // 2, ks // 2].set(0.0)  # Pan's initial kernel: two pixels apart
        else:
            h = _resize_kernel(recentre(h), ks)
        r = ks // 2
        grid = (ops.fast_len(hs + ks - 1), ops.fast_len(ws + ks - 1))
        pads = ((0, 0), (r, grid[0] - hs - r), (r, grid[1] - ws - r))
        B = jnp.pad(gs, pads)
        mask = jnp.pad(jnp.ones((1, hs, ws), jnp.float32), pads)
        if p.boundary == "periodic":
            Bl = jnp.roll(periodic_extend(gs, grid), (r, r), axis=(-2, -1))
            maskl = jnp.ones_like(mask)
        else:
            Bl, maskl = B, mask

        def it(carry, _, B=B, mask=mask, grid=grid, Bl=Bl, maskl=maskl):
            h, lam = carry
            S = _latent_l0(Bl, maskl, _otf(h, grid), lam, p, grid)
            h = _estimate_kernel(S, B, mask, h, p, grid)
            return (h, jnp.maximum(lam / p.lam_decay, p.lam_min)), None

        (h, lam), _ = lax.scan(it, (h, lam), None, length=p.iterations)
    return cleanup(recentre(h), 0.0)  # renormalised: recentring can push mass out of the window


def _check_size(g4, kernel_size, layout):
    if isinstance(kernel_size, bool) or int(kernel_size) != kernel_size or kernel_size < 3 \
            or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd integer >= 3, got {kernel_size}")
    if 2 * kernel_size > min(g4.shape[1:3]):
        hint = " (a 3-D array whose last axis is > 4 is read as [N, H, W]; pass layout='HWC' for " \
               "[H, W, C])" if layout == "NHW" else ""
        raise ValueError(f"kernel_size {kernel_size} is too large for a {tuple(g4.shape[1:3])} image "
                         f"(the image must be at least twice the kernel){hint}")


def _estimate_gray(gray, kernel_size: int, params: L0Params):
    geometry = tuple(pyramid(gray.shape[1:], kernel_size, params.ratio, params.min_kernel))
    return _estimate(gray, float(params.lam), geometry, params)


def estimate_kernel(g, kernel_size: int, params: L0Params = DEFAULTS, *, layout: str | None = None):
    """Blind kernel estimate: one `kernel_size` x `kernel_size` kernel per image, from the luminance of a colour
    image (the band mean for C != 3). `g` and `layout` as in `blind_deconvolve`; returns [k, k] for
    a single image ([H, W] or [H, W, C]), [N, k, k] for a batch."""
    g4, layout = as_batch(g, layout)
    _check_size(g4, kernel_size, layout)
    return from_batch(_estimate_gray(luminance(g4), int(kernel_size), params), layout)


GROW = 1.5  # the first retry's window is this much larger (a kernel that fills its window fails the check)


def fallback_sizes(kernel_size: int) -> tuple[int, ...]:
    """The default retry sizes after `kernel_size`: first a window `GROW` (1.5) times larger (a blur as
    large as the window gives an estimate that fills it, which the check takes for a diffuse
    failure), then about 0.7x and 0.5x of it (odd, >= 7). `never_worse` skips a default size too
    large for the image.

    >>> fallback_sizes(27)
    (41, 19, 13)
    """
    out = [_odd(kernel_size * GROW)]
    for f in (0.7, 0.5):
        k = _odd(kernel_size * f)
        if 7 <= k < kernel_size and k not in out:
            out.append(k)
    return tuple(out)


def _fit_kernels(h, size):
    """Kernels [N, j, j] as [N, size, size]: zero-padded when smaller; when larger, shifted so that
    the centre of mass is nearest the centre, cropped and renormalised."""
    h = np.asarray(h, np.float32)
    j = h.shape[-1]
    if j <= size:
        p = (size - j) // 2
        return np.pad(h, ((0, 0), (p, p), (p, p)))
    c = (j - size) // 2
    h = np.asarray(recentre(jnp.asarray(h)))[:, c:c + size, c:c + size]
    return h / np.maximum(h.sum(axis=(1, 2), keepdims=True), 1e-12)


def blind_deconvolve(g, kernel_size: int, params: L0Params = DEFAULTS, *, layout: str | None = None,
                     fallback: bool = False, retry_sizes=None, return_attempt: bool = False,
                     **nonblind_options):
    """Blind deconvolution -> (u, h): the kernel by `estimate_kernel`, every band restored with it by
    `unroll.nonblind.deconvolve` (options `nonblind_options`). u has g's shape (not clipped).

    Input forms (`layout`, inferred when None): [H, W] ("HW") one gray image; [N, H, W] ("NHW") a
    gray batch; [H, W, C] ("HWC") one image with C bands; [N, H, W, C] ("NHWC") a batch. A 3-D array
    is read as [H, W, C] when its last axis is at most 4 (a gray batch that narrow could not hold
    the kernel), otherwise as [N, H, W]; pass `layout` to say which. The kernel of a colour image is
    estimated from its BT.601 luminance (C = 3) or its band mean; h is [k, k] for a single image,
    [N, k, k] for a batch.

    `fallback` (default False: the plain solver, so that `python -m experiments.levin
    --method=classical` and every figure measured with it stay as they are; set it for photographs,
    where a failed estimate can end 10-15 dB below the input): `never_worse` checks every result and
    redoes the failed ones with the `retry_sizes`, in the end returning the input (figures in
    `unroll.classical.check`).
    `return_attempt`: also return which attempt each image kept (see `never_worse`).

    >>> import numpy as np
    >>> g = np.random.default_rng(0).random((40, 40, 3)).astype(np.float32)
    >>> u, h = blind_deconvolve(g, 5)
    >>> u.shape, h.shape
    ((40, 40, 3), (5, 5))
    """
    g4, layout = as_batch(g, layout)
    _check_size(g4, kernel_size, layout)
    h = _estimate_gray(luminance(g4), int(kernel_size), params)
    u = nonblind.deconvolve(g4, h, **nonblind_options)
    attempt = np.zeros(g4.shape[0], np.int32)
    if fallback:
        u, h, attempt = never_worse(g4, u, h, kernel_size, params, layout="NHWC", retry_sizes=retry_sizes,
                                    **nonblind_options)
    out = (from_batch(jnp.asarray(u), layout), from_batch(jnp.asarray(h), layout))
    if return_attempt:
        out += (attempt if layout.startswith("N") else int(attempt[0]),)
    return out


def never_worse(g, u, h, kernel_size: int, params: L0Params = DEFAULTS, *, layout: str | None = None,
                retry_sizes=None, **nonblind_options):
    """Fallback for restorations `u` of `g` with kernels `h` (any method's; forms as in
    `blind_deconvolve`, h [k, k] or [N, k, k]) -> (u, h, attempt) as numpy arrays in g's form.

    Each image failing `check_restoration` is redone by `blind_deconvolve` with the first of
    `retry_sizes` (default `fallback_sizes(kernel_size)`: 1.5x, then about 0.7x and 0.5x),
    then the next, and one that fails them all is returned unchanged with a delta kernel. Kernels
    of a retry size are returned as `kernel_size` ones: zero-padded when smaller, cropped about
    their centre of mass and renormalised when larger. attempt (per image): 0 the given restoration, i the i-th
    retry size, -1 the input.
    """
    g4, layout = as_batch(g, layout)
    u4, _ = as_batch(u, layout)
    h = jnp.asarray(h, jnp.float32)
    h3 = h if h.ndim == 3 else h[None]
    if u4.shape != g4.shape or h3.shape != (g4.shape[0], kernel_size, kernel_size):
        raise ValueError(f"u {tuple(u4.shape)} must have g's shape {tuple(g4.shape)} and h "
                         f"{tuple(h3.shape)} be [N, {kernel_size}, {kernel_size}]")
    if retry_sizes is None:  # the defaults that fit the image
        sizes = tuple(k for k in fallback_sizes(kernel_size) if 2 * k <= min(g4.shape[1:3]))
    else:
        sizes = tuple(int(k) for k in retry_sizes)
    for k in sizes:
        if k == kernel_size:
            raise ValueError(f"retry_sizes must differ from kernel_size {kernel_size}, got {k}")
        _check_size(g4, k, layout)
    u4, h3 = np.array(u4), np.array(h3)
    ok = check.check_restoration(g4, u4, h3, layout="NHWC").ok
    attempt = np.zeros(g4.shape[0], np.int32)
    for i, k in enumerate(sizes, 1):
        bad = np.flatnonzero(~ok)
        if bad.size == 0:
            break
        # padded to a power of two by repeating an image: fewer shapes to compile across calls
        padded = np.concatenate([bad, np.full((1 << (bad.size - 1).bit_length()) - bad.size, bad[0])])
        uk, hk = blind_deconvolve(g4[padded], k, params, layout="NHWC", **nonblind_options)
        uk, hk = np.asarray(uk)[:bad.size], np.asarray(hk)[:bad.size]
        okk = check.check_restoration(g4[bad], uk, hk, layout="NHWC").ok
        take = bad[okk]
        u4[take], h3[take] = uk[okk], _fit_kernels(hk, kernel_size)[okk]
        attempt[take], ok[take] = i, True
    bad = np.flatnonzero(~ok)
    u4[bad], h3[bad] = np.asarray(g4)[bad], kernels.delta(kernel_size)
    attempt[bad] = -1
    return from_batch(u4, layout), from_batch(h3, layout), (attempt if layout.startswith("N")
                                                            else attempt[0])
