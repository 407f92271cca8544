"""Classical (non-learned) unrolled blind deconvolution, tunable by jax.grad through its iterations.

MGSTNet's stages with its learned proximal modules replaced by fixed, classical ones, so that the
same kernel and image steps (`unroll.steps`) can be run, studied and tuned without a network. Pure
functions, no Flax; loop counts (scales, iterations, wavelet levels, shifts) are static.

Energy (per image, h >= 0 and sum(h) = 1; N_obs = H W C; W_d the detail bands of W):

    E(u, h) = 1/2 ||h * u - g||^2 + theta ||W_d u||_p^p + N_obs lam ||h||_1        (`objective`)

One blind iteration k (parameters per scale and iteration, `default_params`):

  1. Kernel gradient step, KGDM (eq. 11): s = h - mu_eff grad_h 1/(2 N_obs) ||h * x - y||^2, which
     is `steps.kernel_step` (the MEAN data term; E / N_obs in h), with x, y the horizontal and
     vertical differences of u and g (blur commutes with differentiation).
  2. Kernel prox (eq. 13, soft threshold in place of the learned KPM of eq. 12) and the constraints
     of eq. (14): h = normalize_kernel(soft(s, mu_eff lam)), the l1 prior plus ReLU and division by
     the sum. This is ISTA on E / N_obs followed by a renormalisation, *not* the exact prox of
     l1 + simplex (that would be a Euclidean projection onto the simplex, where ||h||_1 = 1 is a
     constant): lam acts through shrink-then-rescale, which removes the small values (like the
     kernel thresholding of Cho and Lee 2009 or Xu and Jia 2010).
  3. Image gradient step, IGDM (eq. 17): r = `steps.image_step`(z, h, g, rho_eff) (summed data
     term), z = u + beta (u - u_prev) a FISTA extrapolation (`accelerated`).
  4. Image prox (eq. 18 with F = W an orthonormal multi-level 2-D Haar transform and GST_p of
     eqs. 19-20): u = W^T GST_p(W r, rho_eff theta) on the detail bands; the coarsest approximation
     band (the local means) is kept. Because W is orthonormal, ||u - r|| = ||W u - W r|| and the
     penalty separates over coefficients, so this is *exactly* argmin_u 1/(2 rho_eff) ||u - r||^2 +
     theta ||W_d u||_p^p (GST_p is the exact scalar prox of theta |x|^p once its fixed point has
     converged; 3 iterations as in the paper leave a small error; soft is exact for p = 1). With
     cycle spinning (`shifts` > 1, the default 4) the prox is averaged over fixed circular shifts:
     a better denoiser (less blocky), but no longer the prox of one energy.

After the blind scales, `final_iterations` non-blind FISTA iterations restore the image with the
final kernel (h fixed), from the blurred image, with their own rho, theta, p.

Choices, and why (numbers: 8 Levin images, one per kernel, and the 3 built-in test images blurred
by 27x27 camera shake; PSNR after the best shift; defaults 3 scales x 20 + 20 iterations gave
25.52 dB / MNC 0.669 on Levin (input 23.17) and 29.63 dB / 0.773 on the built-in set (input 28.03)):
  * Coarse to fine (3 scales, images and kernels halved per scale, kernel upsampled about its
    centre and u bilinearly between scales; h_0 a 3x3 box at the coarsest scale): one scale with
    60 iterations gave 24.76 dB / 0.656 and 29.45 / 0.748.
  * An image prior that favours sharp edges during kernel estimation: p = 0.05 (close to L0, hard
    thresholding at about sqrt(2 theta)) with a strong theta = 2e-3. A step edge has fewer nonzero
    Haar coefficients than a ramp, so the no-blur solution (h = delta, u = g; Levin et al. 2009)
    is not favoured as it is by convex priors. Measured: p = 1 (`threshold="soft"`) gave
    24.44 / 0.650 and 28.80 / 0.625; p = 0.5 gave 25.30 / 0.679 and 29.53 / 0.789 (slightly
    better kernels, worse Levin images), so the default is a compromise that tuning may move. The
    final non-blind phase uses a weaker prior (p = 0.5, theta = 1e-3) on the blurred image.
  * Kernel step on image gradients: the intensity domain gave 23.21 / 0.535 and 26.58 / 0.636 (with
    the true sharp image given, 300 kernel steps reach MNC 0.83-0.87 on 4 Levin images from
    gradients but 0.31-0.72 from intensities: the intensity curvature is dominated by the image
    mean and the problem is far worse conditioned).
  * Kernel step size mu_eff = mu x the exact line-search (Cauchy) step of the quadratic kernel data
    term along its gradient (one extra blur): its curvature relative to mean(x^2) ranged 4-66 over
    17 natural images at kernel size 27, so a fixed mu is unstable on some and slow on others;
    mu = 1 is the minimiser along the gradient, any mu in (0, 2) decreases the data term.
  * Image step size rho_eff = rho / L, L = `image_lipschitz_bound(h)`: with the symmetric boundary
    ||A||^2 is NOT bounded by ||h||_1^2 = 1 (the mirrored border counts border pixels twice: 4 for
    a delta in a corner of the window, 1.39 and 2.04 for Levin's kernels 4 and 6 as stored), and
    FISTA with rho = 1 diverged on one Levin image. rho in (0, 1] is then a descent step.
  * FISTA momentum with gradient restart (O'Donoghue and Candes 2015): one image step per kernel
    step otherwise leaves u too blurred for the kernel step; momentum = 0 gave 25.35 / 0.656.
  * Cycle spinning over 4 shifts: 1 shift gave 23.31 / 0.658 (blocky Haar artefacts).
  * The kernel and image are recentred (kernel centre of mass to the window centre, u shifted the
    other way) after each scale: blind deconvolution fixes h only up to a shift.
  * Few iterations: 20 per scale and 20 non-blind. 60 + 40 gave 23.91 dB on Levin: the kernel does
    not improve and long non-blind runs amplify the ringing of kernel errors.

Parameters are a flat dict of raw arrays (positive ones as log, p as logit): `BLIND` names are
`[scales, iterations]`, `FINAL` names `[final_iterations]`. Each scale is a `lax.scan` over its
iterations (compile time does not grow with the iteration count; `remat=True` recomputes each
iteration in the backward pass). `tune` fits them with optax Adam by jax.grad of -PSNR through all
iterations on synthetic pairs (`make_training_pairs`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from unroll import ops, shrinkage, steps
from unroll.wavelets import haar_forward, haar_inverse

THRESHOLDS = shrinkage.THRESHOLDS
KERNEL_DOMAINS = ("gradient", "intensity")
# Cycle-spinning shifts (rows, columns); the first `shifts` are used. They cover the offsets of the
# two finest Haar levels, where the shift variance is largest.
SHIFTS = ((0, 0), (1, 1), (2, 3), (3, 2), (1, 0), (0, 1), (2, 1), (1, 2))
_SQRT_HALF = 1.0 / math.sqrt(2.0)
_EPS = 1e-12
_TINY = 1e-30


# ----------------------------------------------------------------------------------------------------
# Parameters.


def _log(x):
    return float(np.log(x))


def _logit(p):
    return float(np.log(p) - np.log1p(-p))


def _schedule(start, end, iterations):
    """Geometric interpolation start -> end over the iterations (constant when equal)."""
    if iterations == 1:
        return np.array([start], np.float64)
    return np.geomspace(start, end, iterations)


BLIND = ("mu", "lam", "rho", "theta", "p")  # per scale and iteration, [scales, iterations]
FINAL = ("final_rho", "final_theta", "final_p")  # per non-blind iteration, [final_iterations]
PARAM_NAMES = BLIND + FINAL
_PROBABILITIES = ("p", "final_p")  # sigmoid; every other parameter is exp(raw) > 0


def default_params(iterations: int = 20, scales: int = 3, final_iterations: int = 20, *,
                   mu: float = 1.0, lam: float = 1e-6, rho: float = 1.0,
                   theta: float | tuple[float, float] = 0.002, p: float = 0.05,
                   final_rho: float = 1.0, final_theta: float | tuple[float, float] = 1e-3,
                   final_p: float = 0.5, dtype=jnp.float32) -> dict:
    """Raw (unconstrained) parameters, a flat dict of per-iteration arrays (see `constrain`).

    Blind phase (`BLIND`, `[scales, iterations]`): kernel step `mu` (in units of the exact
    line-search step), kernel l1 weight `lam`, image step `rho`, image prior weight `theta` and
    exponent `p`. Final non-blind phase (`FINAL`, `[final_iterations]`): `final_rho`,
    `final_theta`, `final_p`. A weight given as a (first, last) pair is a geometric continuation
    over the iterations (repeated at every scale). Positive values are stored as log(value), p as
    logit(p).
    """
    if iterations < 1 or scales < 1 or final_iterations < 0:
        raise ValueError(f"need iterations >= 1, scales >= 1, final_iterations >= 0, got "
                         f"{iterations}, {scales}, {final_iterations}")

    def row(value, n, name):
        first, last = (value, value) if np.isscalar(value) else value
        if name in _PROBABILITIES:
            if not 0 < first < 1:
                raise ValueError(f"{name} must be in (0, 1), got {value}")
            return np.full(n, _logit(first))
        if not (first > 0 and last > 0):
            raise ValueError(f"{name} must be positive, got {value}")
        return np.log(_schedule(first, last, n)) if n else np.zeros(0)

    given = dict(mu=mu, lam=lam, rho=rho, theta=theta, p=p, final_rho=final_rho,
                 final_theta=final_theta, final_p=final_p)
    raw = {k: np.broadcast_to(row(given[k], iterations, k), (scales, iterations)) for k in BLIND}
    raw.update({k: row(given[k], final_iterations, k) for k in FINAL})
    return {k: jnp.asarray(v, dtype) for k, v in raw.items()}


def constrain(params: dict) -> dict:
    """Raw parameters (any subset, any shapes) -> positive step sizes and weights (exp), p in (0, 1)
    (sigmoid)."""
    return {k: jax.nn.sigmoid(v) if k in _PROBABILITIES else jnp.exp(v) for k, v in params.items()}


def _check_params(params, iterations=None):
    """(scales, iterations, final_iterations) of a parameter dict, or ValueError."""
    if not isinstance(params, dict) or set(params) != set(PARAM_NAMES):
        raise ValueError(f"params must be a dict with keys {PARAM_NAMES}, got "
                         f"{sorted(params) if isinstance(params, dict) else type(params).__name__}")
    blind = {jnp.shape(params[k]) for k in BLIND}
    final = {jnp.shape(params[k]) for k in FINAL}
    if len(blind) != 1 or len(next(iter(blind))) != 2:
        raise ValueError(f"{BLIND} must be [scales, iterations] arrays of one shape, got {blind}")
    if len(final) != 1 or len(next(iter(final))) != 1:
        raise ValueError(f"{FINAL} must be [final_iterations] arrays of one shape, got {final}")
    scales, its = next(iter(blind))
    if iterations is not None and its != iterations:
        raise ValueError(f"params hold {its} iterations per scale, but iterations={iterations}")
    return scales, its, next(iter(final))[0]


def _shrink(y, t, p, threshold, gst_iterations):
    if threshold == "soft":
        return shrinkage.soft_threshold(y, t)
    return shrinkage.gst(y, t, p, iterations=gst_iterations)


def wavelet_prox(r, t, p, *, levels: int = 3, threshold: str = "gst", gst_iterations: int = 3,
                 shifts: int = 1):
    """u = W^T shrink(W r, t, p) on the detail bands, the approximation band kept.

    For `shifts == 1` this is exactly argmin_u 1/2 ||u - r||^2 + t ||W_d u||_p^p (W orthonormal, so
    the problem separates over coefficients; GST_p is the exact scalar prox once its fixed point has
    converged, soft is exact for p = 1). `shifts > 1` averages it over fixed circular shifts (cycle
    spinning): a better denoiser, but no longer the prox of a single energy.
    """
    if threshold not in THRESHOLDS:
        raise ValueError(f"threshold must be one of {THRESHOLDS}, got {threshold!r}")
    if not 1 <= shifts <= len(SHIFTS):
        raise ValueError(f"shifts must be in 1..{len(SHIFTS)}, got {shifts}")

    n = r.shape[0]
    t = jnp.asarray(t, r.dtype)
    t = t.reshape(t.shape + (1,) * (r.ndim - t.ndim)) if t.ndim else t  # scalar or per image [N]

    def one(x, t):
        approx, details = haar_forward(x, levels)
        # All detail bands shrunk as one [N, M] array: one elementwise graph instead of 3 per level.
        leaves, tree = jax.tree.flatten(details)
        flat = jnp.concatenate([d.reshape(d.shape[0], -1) for d in leaves], axis=1)
        flat = _shrink(flat, t.reshape(t.shape[:1] + (1,)) if jnp.ndim(t) else t, p, threshold,
                       gst_iterations)
        sizes = np.cumsum([int(np.prod(d.shape[1:])) for d in leaves])[:-1]
        leaves = [c.reshape(d.shape) for c, d in zip(jnp.split(flat, sizes, axis=1), leaves)]
        return haar_inverse(approx, jax.tree.unflatten(tree, leaves))

    if shifts == 1:
        return one(r, t)
    # All shifted copies go through one transform as a batch (a smaller graph than a Python loop).
    offsets = SHIFTS[:shifts]
    ts = jnp.concatenate([jnp.broadcast_to(t, (n,) + (1,) * (r.ndim - 1))] * shifts, axis=0)
    y = one(jnp.concatenate([jnp.roll(r, o, axis=(1, 2)) for o in offsets], axis=0), ts)
    y = [jnp.roll(y[i * n:(i + 1) * n], (-o[0], -o[1]), axis=(1, 2)) for i, o in enumerate(offsets)]
    return sum(y) / shifts


def prior(u, p, *, levels: int = 3, threshold: str = "gst"):
    """||W_d u||_p^p per image `[N]` (sum over the Haar detail coefficients; p = 1 for soft)."""
    _, details = haar_forward(u, levels)
    power = 1.0 if threshold == "soft" else p
    leaves = jax.tree.leaves(details)
    return sum(jnp.sum(jnp.abs(d) ** power, axis=(1, 2, 3)) for d in leaves)


# ----------------------------------------------------------------------------------------------------
# Energy and one iteration.


def objective(u, h, g, params_k, *, levels: int = 3, threshold: str = "gst",
              boundary: str = "symmetric"):
    """Energy per image `[N]` whose proximal-gradient steps one iteration takes (raw `params_k`).

    E(u, h) = 1/2 ||h * u - g||^2 + theta ||W_d u||_p^p + N_obs lam ||h||_1,   N_obs = H W C,

    i.e. the image step (`steps.image_step`, the gradient of the summed term with step rho_eff)
    followed by the prox with threshold rho_eff * theta is ISTA on E in u, and the kernel step
    (`steps.kernel_step`, the gradient of the MEAN term 1/(2 N_obs) ||h * u - g||^2 with step
    mu_eff) followed by soft thresholding at mu_eff * lam is ISTA on E / N_obs in h (before the
    renormalisation, see the module docstring). On the constraint set (h >= 0, sum 1) the last term
    is the constant N_obs lam.
    """
    c = constrain(params_k)
    n_obs = u.shape[1] * u.shape[2] * u.shape[3]
    return (steps.data_term(u, h, g, boundary)
            + c["theta"] * prior(u, c["p"], levels=levels, threshold=threshold)
            + n_obs * c["lam"] * jnp.sum(jnp.abs(h), axis=(-2, -1)))


def _gradients(x):
    """Forward differences [N, H, W, 2C] (zero in the last row / column)."""
    dy = jnp.pad(x[:, 1:] - x[:, :-1], ((0, 0), (0, 1), (0, 0), (0, 0)))
    dx = jnp.pad(x[:, :, 1:] - x[:, :, :-1], ((0, 0), (0, 0), (0, 1), (0, 0)))
    return jnp.concatenate([dy, dx], axis=-1)


def kernel_update(h, u, g, mu, lam, *, kernel_domain: str = "gradient", boundary: str = "symmetric"):
    """Kernel ISTA (eqs. 11, 13, 14): s = kernel_step(h, x, y, mu_eff); h = normalize(soft(s, mu_eff lam)).

    x, y = u, g ("intensity") or their vertical and horizontal differences ("gradient": blur
    commutes with differentiation). Step: mu_eff = mu * ||d||^2 / (||x * d||^2 / N_obs), d the
    gradient of the mean data term, i.e. mu times the exact line-search (Cauchy) step of that
    quadratic along d. The curvature of the kernel data term varies by more than an order of
    magnitude between images (and as the prior sharpens u), so any fixed step is either unstable or
    slow for some of them; with this normalisation mu = 1 is the exact minimiser along d and any mu
    in (0, 2) decreases the data term (one extra blur per iteration).
    """
    if kernel_domain == "gradient":
        x, y = _gradients(u), _gradients(g)
    else:
        x, y = u, g
    n_obs = x.shape[1] * x.shape[2] * x.shape[3]
    d = h - steps.kernel_step(h, x, y, 1.0, boundary)  # gradient of the mean data term (eq. 11)
    curvature = jnp.sum(ops.blur(x, d, boundary) ** 2, axis=(1, 2, 3)) / n_obs
    rayleigh = curvature / (jnp.sum(d * d, axis=(-2, -1)) + _TINY)
    # Floor: 0.1 mean(x^2), below the smallest curvature seen on natural images, so that a direction
    # of nearly zero curvature (d ~ 0, or x ~ 0) cannot produce an unbounded step.
    mu_eff = mu / jnp.maximum(rayleigh, 0.1 * jnp.mean(x * x, axis=(1, 2, 3)) + _TINY)
    s = h - mu_eff[:, None, None] * d  # == steps.kernel_step(h, x, y, mu_eff)
    return steps.normalize_kernel(shrinkage.soft_threshold(s, (mu_eff * lam)[:, None, None]))


def image_lipschitz_bound(h, boundary: str = "symmetric"):
    """An upper bound `[N]` on the Lipschitz constant ||A||^2 of u -> grad 1/2 ||h * u - g||^2.

    Schur test: ||A||^2 <= max(A 1) max(A^T 1) (row sums times column sums, h >= 0). For the
    circular boundary both are ||h||_1 = 1; for the symmetric boundary the mirrored padding gives
    border pixels column sums up to 4 for a kernel whose mass is off-centre (by power iteration the
    true ||A||^2 is 4 for a delta in the corner of the window, 1.39 and 2.04 for Levin's kernels 4
    and 6 as stored), so the step rho = 1 is *not* safe there for every kernel. The sums only
    differ from 1 within a kernel radius of the border, so they are computed on a (2k+1)^2 image
    of ones.
    """
    kh, kw = h.shape[-2:]
    ones = jnp.ones((h.shape[0], 2 * kh + 1, 2 * kw + 1, 1), h.dtype)
    rows = jnp.max(ops.blur(ones, h, boundary), axis=(1, 2, 3))
    cols = jnp.max(ops.blur_adjoint(ones, h, boundary), axis=(1, 2, 3))
    return jnp.maximum(rows * cols, _TINY)


def image_update(u, h, g, rho, theta, p, *, levels: int = 3, threshold: str = "gst",
                 gst_iterations: int = 3, shifts: int = 1, boundary: str = "symmetric"):
    """Image ISTA (eqs. 17-20): r = image_step(u, h, g, rho_eff); u = W^T GST_p(W r, rho_eff theta),
    rho_eff = rho / L with L = `image_lipschitz_bound(h)` (= 1 for the circular boundary), so that
    any rho in (0, 1] is a descent step for every kernel and boundary."""
    rho_eff = rho / image_lipschitz_bound(h, boundary)
    r = steps.image_step(u, h, g, rho_eff, boundary)
    return wavelet_prox(r, rho_eff * theta, p, levels=levels,
                        threshold=threshold, gst_iterations=gst_iterations, shifts=shifts)


def accelerated(update, u, u_prev, t, momentum: float = 1.0):
    """One FISTA step `u_new = update(u + beta (u - u_prev))` with adaptive restart, per image.

    beta = momentum (t - 1) / t', t' = (1 + sqrt(1 + 4 t^2)) / 2 (Beck and Teboulle 2009). When the
    step points against the momentum, <z - u_new, u_new - u> > 0, t' is reset to 1 so that the next
    step is plain ISTA (gradient restart, O'Donoghue and Candes 2015): without it the extrapolation
    diverges on some images with the nonconvex GST_p prox and a kernel that changes every step.
    Returns `(u_new, u, t')`.
    """
    t_next = (1 + jnp.sqrt(1 + 4 * t * t)) / 2
    beta = (momentum * (t - 1) / t_next)[:, None, None, None]
    z = u + beta * (u - u_prev)
    new = update(z)
    restart = jnp.sum((z - new) * (new - u), axis=(1, 2, 3)) > 0
    return new, u, jnp.where(lax.stop_gradient(restart), jnp.ones_like(t_next), t_next)


def iteration(u, u_prev, t, h, g, params_k, *, levels: int = 3, threshold: str = "gst",
              gst_iterations: int = 3, shifts: int = 1, kernel_domain: str = "gradient",
              boundary: str = "symmetric", momentum: float = 1.0):
    """One blind iteration with raw per-iteration parameters `params_k` (scalars): the kernel
    update from the current image, then an (accelerated, see `accelerated`) image update.
    Returns `(u_new, u, t_new, h_new)`."""
    c = constrain(params_k)
    h = kernel_update(h, u, g, c["mu"], c["lam"], kernel_domain=kernel_domain, boundary=boundary)
    p = 1.0 if threshold == "soft" else c["p"]
    update = functools.partial(image_update, h=h, g=g, rho=c["rho"], theta=c["theta"], p=p,
                               levels=levels, threshold=threshold, gst_iterations=gst_iterations,
                               shifts=shifts, boundary=boundary)
    u_new, u, t = accelerated(update, u, u_prev, t, momentum)
    return u_new, u, t, h


# ----------------------------------------------------------------------------------------------------
# Coarse to fine.


def _odd(x: float) -> int:
    return max(3, 2 * int(round((x - 1) / 2)) + 1)


def pyramid(image_hw, kernel_size: int, scales: int):
    """[(H_s, W_s, k_s)] from coarse to fine: images halved and kernels about halved per scale."""
    H, W = image_hw
    out = []
    for j in range(scales - 1, -1, -1):
        f = 2 ** j
        k = kernel_size if j == 0 else min(kernel_size, _odd(kernel_size / f))
        out.append((max(k, int(round(H / f))), max(k, int(round(W / f))), k))
    return out


def _resize_kernel(h, size, scale):
    """Rescale kernels by `scale` (y, x) about their centres into `size` x `size`, renormalised."""
    k = h.shape[-1]
    sy, sx = scale
    ty, tx = size / 2 - sy * k / 2, size / 2 - sx * k / 2
    out = jax.image.scale_and_translate(h, (h.shape[0], size, size), (1, 2), jnp.array([sy, sx]),
                                        jnp.array([ty, tx]), "linear", antialias=False)
    return steps.normalize_kernel(out)


def _recentre(u, h):
    """Move each kernel's centre of mass to the nearest pixel of the centre, and u the opposite way,
    so that h * u is unchanged away from the borders (blind deconvolution only fixes h up to a
    shift; without this a kernel can drift out of its window)."""
    kh, kw = h.shape[-2:]
    ry, rx = kh // 2, kw // 2
    ys, xs = jnp.arange(kh, dtype=h.dtype), jnp.arange(kw, dtype=h.dtype)
    mass = jnp.sum(h, axis=(-2, -1)) + _EPS
    cy = jnp.sum(h * ys[:, None], axis=(-2, -1)) / mass
    cx = jnp.sum(h * xs[None, :], axis=(-2, -1)) / mass
    dy = jnp.clip(jnp.round(lax.stop_gradient(cy)) - ry, -ry, ry).astype(jnp.int32)
    dx = jnp.clip(jnp.round(lax.stop_gradient(cx)) - rx, -rx, rx).astype(jnp.int32)
    hp = jnp.pad(h, ((0, 0), (ry, ry), (rx, rx)))
    up = jnp.pad(u, ((0, 0), (ry, ry), (rx, rx), (0, 0)), mode="edge")

    def one(hp, up, dy, dx):  # h'(y) = h(y + d), u'(x) = u(x - d)
        h2 = lax.dynamic_slice(hp, (ry + dy, rx + dx), (kh, kw))
        u2 = lax.dynamic_slice(up, (ry - dy, rx - dx, jnp.zeros_like(dy)), u.shape[1:])
        return h2, u2

    h2, u2 = jax.vmap(one)(hp, up, dy, dx)
    return u2, h2


def initial_kernel(batch: int, size: int, dtype=jnp.float32):
    """h_0 at the coarsest scale: a 3x3 box in the centre (close to a delta, but with some spread)."""
    h = jnp.zeros((batch, size, size), dtype)
    c = size // 2
    return h.at[:, c - 1:c + 2, c - 1:c + 2].set(1.0 / 9.0)


_STATIC = ("iterations", "kernel_size", "levels", "threshold", "gst_iterations", "shifts",
           "kernel_domain", "boundary", "recentre", "momentum", "final_init", "remat")


def _scan(body, carry, xs, remat):
    if remat:
        body = jax.checkpoint(body)
    return lax.scan(body, carry, xs)[0]


@functools.partial(jax.jit, static_argnames=_STATIC)
def _solve(g, params, iterations, kernel_size, levels, threshold, gst_iterations, shifts,
           kernel_domain, boundary, recentre, momentum, final_init, remat):
    N, H, W, C = g.shape
    geometry = pyramid((H, W), kernel_size, params["mu"].shape[0])
    opts = dict(levels=levels, threshold=threshold, gst_iterations=gst_iterations, shifts=shifts,
                boundary=boundary)
    u = h = prev = None
    for s, (hs, ws, ks) in enumerate(geometry):  # coarse to fine
        gs = g if (hs, ws) == (H, W) else jax.image.resize(g, (N, hs, ws, C), "linear", antialias=True)
        if prev is None:
            u, h = gs, initial_kernel(N, ks, g.dtype)
        else:
            h = _resize_kernel(h, ks, (hs / prev[0], ws / prev[1]))
            u = jax.image.resize(u, (N, hs, ws, C), "linear")

        def blind(carry, params_k, gs=gs):
            u, u_prev, t, h = carry
            return iteration(u, u_prev, t, h, gs, params_k, kernel_domain=kernel_domain,
                             momentum=momentum, **opts), None

        ones = jnp.ones((N,), g.dtype)
        u, _, _, h = _scan(blind, (u, u, ones, h), {k: params[k][s] for k in BLIND}, remat)
        if recentre:
            u, h = _recentre(u, h)
        prev = (hs, ws)

    # Non-blind phase with the final kernel (h fixed): FISTA on the image energy.
    final = params["final_rho"].shape[0]
    if final:
        u0 = g if final_init == "blurred" else u

        def nonblind(carry, params_k):
            c = constrain(params_k)
            update = functools.partial(
                image_update, h=h, g=g, rho=c["final_rho"], theta=c["final_theta"],
                p=1.0 if threshold == "soft" else c["final_p"], **opts)
            return accelerated(update, *carry, momentum), None

        u, _, _ = _scan(nonblind, (u0, u0, jnp.ones((N,), g.dtype)), {k: params[k] for k in FINAL},
                        remat)
    return u, h


def solve(g, params, iterations: int, kernel_size: int, *, levels: int = 3, threshold: str = "gst",
          gst_iterations: int = 3, shifts: int = 4, kernel_domain: str = "gradient",
          boundary: str = "symmetric", recentre: bool = True, momentum: float = 1.0,
          final_init: str = "blurred", remat: bool = False):
    """Blind deconvolution of `g [N, H, W, C]` -> `(u [N, H, W, C], h [N, k, k])`, k = kernel_size.

    `params` from `default_params(iterations, scales, final_iterations)` (raw). The scales run
    coarse to fine, each a `lax.scan` over its `iterations`; then `final_iterations` non-blind
    image iterations with the final kernel (then, with `final_init="blurred"`, only the kernel
    leaves the blind phase: the last blind image update has no effect on the output). Jitted; the
    keyword arguments are static. Options: `levels` of the Haar transform, `threshold` ("gst" or
    "soft"), `gst_iterations`, cycle-spinning `shifts` (1-8), `kernel_domain` ("gradient" or
    "intensity"), `boundary` of the blur, `recentre` after each scale, FISTA `momentum` (0 = ISTA,
    1 = FISTA), `final_init` ("blurred" or "blind": where the non-blind phase starts), `remat`.
    """
    _check_params(params, iterations)
    g = jnp.asarray(g)
    if g.ndim != 4:
        raise ValueError(f"g must be [N, H, W, C], got shape {g.shape}")
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd integer >= 3, got {kernel_size}")
    if kernel_size > min(g.shape[1:3]):
        raise ValueError(f"kernel_size {kernel_size} is larger than the image {g.shape[1:3]}")
    if threshold not in THRESHOLDS:
        raise ValueError(f"threshold must be one of {THRESHOLDS}, got {threshold!r}")
    if kernel_domain not in KERNEL_DOMAINS:
        raise ValueError(f"kernel_domain must be one of {KERNEL_DOMAINS}, got {kernel_domain!r}")
    if not 1 <= shifts <= len(SHIFTS):
        raise ValueError(f"shifts must be in 1..{len(SHIFTS)}, got {shifts}")
    if final_init not in ("blurred", "blind"):
        raise ValueError(f"final_init must be 'blurred' or 'blind', got {final_init!r}")
    if not 0 <= momentum <= 1:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    return _solve(g, params, iterations, kernel_size, levels=levels, threshold=threshold,
                  gst_iterations=gst_iterations, shifts=shifts, kernel_domain=kernel_domain,
                  boundary=boundary, recentre=recentre, momentum=float(momentum),
                  final_init=final_init, remat=remat)


