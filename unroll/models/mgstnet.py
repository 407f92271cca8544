"""MGSTNet (paper Section II-B, Fig. 1) as Flax NNX modules.

Stage k (parameters not shared between stages):
  KGDM, eq. (11):  s_k = h_{k-1} - mu_k grad_h            (steps.kernel_step)
  KPM,  eq. (12):  h_{k-1/2} = s_k + G~_k(Soft(G_k(s_k), theta_1k))
        eq. (14):  h_k = ReLU(h_{k-1/2}) / sum            (steps.normalize_kernel)
  IGDM, eq. (17):  r_k = u_{k-1} - rho_k h_k(-x,-y) * (h_k * u_{k-1} - g)   (steps.image_step)
        or, with image_step="closed_form" (beyond the paper), the data term solved exactly:
                   r_k = argmin_r ||h_k * r - g||^2 + beta_k ||r - u_{k-1}||^2  (steps.closed_form_image_step)
  IPMM, eq. (18):  u_k = r_k + F~_k({GST_p(F_k(r_k)_i, theta_2k,i)}_i)   one GST per scale i
with u_0 = g and h_0 the uniform kernel (or a given initial kernel: a warm start, beyond the paper).

Noise-conditional variant (beyond the paper, `noise_conditional=True`): with t = log((sigma + 1e-3)
/ 0.01) from the image's noise std sigma (given, or `unroll.noise.estimate_batch(g)`), each stage
scales mu_k, rho_k (or beta_k), theta_1k and every theta_2k,i by its own learned exp(a t) (a = 0 at
initialisation: the unconditional network), and IPMM's extractor F_k gets t as one more input
channel (FFDNet's noise map). The thresholds of a wavelet or GST prior grow with the noise in
classical denoising; here the network learns how much.
The gradient steps run on the true-size image; the image prior networks run on a copy padded
(symmetrically) to a multiple of 2^(scales-1) and are cropped back.

Learned scalars stay positive through softplus (steps, thresholds) or a sigmoid (p = sigmoid(p0)).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx, struct
from jax import lax

from unroll import kernels, noise, nonblind, ops, shrinkage, steps, verdict
from unroll.models.blocks import REDUCTION, EncoderDecoder, Keys, RCABs, as_keys, conv, scale_widths

# The image prox's shrinkage (eq. 18): GST_p (eqs. 19-20) or, for the ablation, the soft threshold.
THRESHOLDS = shrinkage.THRESHOLDS
# How GST_p is differentiated: through its unrolled fixed-point iterations (`shrinkage.gst`), or by
# the implicit function theorem at the exact prox (`shrinkage.gst_implicit`, reverse mode only).
# Both have the same forward value.
GST_GRADS = ("unrolled", "implicit")
# How S of eq. (19) is found: the paper's three fixed-point steps of eq. (20), or one Halley step
# from an upper bound of the root (`shrinkage.gst`, eqs. N1-N2): more accurate and about twice as fast.
GST_SOLVERS = shrinkage.GST_SOLVERS
SOLVER_ITERATIONS = {"fixed_point": 3, "halley": 1}
# The image update before IPMM: the paper's gradient step IGDM (eq. 17), or the data term's proximal
# operator solved in closed form (`steps.closed_form_image_step`), which can undo a large blur in one
# stage where a few gradient steps cannot.
IMAGE_STEPS = ("gradient", "closed_form")
# u_0: the blurred input (the paper's) or, beyond the paper, the non-blind restoration of g with h_0
IMAGE_INITS = ("blurred", "nonblind")

# Initial values of the learned scalars (see steps.py for the step-size scaling):
#  * rho: the image step's Lipschitz constant is <= ||h||_1^2 = 1 for circular/zero boundaries (rho = 1
#    descends); the symmetric boundary can raise it to 4 for off-centre kernels (see steps.py).
#  * mu: the kernel step uses the *mean* data term. Its curvature along zero-sum kernel directions
#    (the sum is fixed by eq. 14, and the gradient's sum is ~0 once sum(h) = 1) is O(0.3-2) for
#    natural 256x256 images and a 15x15 kernel, so mu = 1 is about 1/L: a safe descent step.
#  * thresholds: prior features are O(1) at initialisation (the kernel is rescaled, see KernelProx),
#    and 0.01 is the usual ISTA-Net+ starting threshold; p = 0.5 is a hyper-Laplacian prior.
MU_INIT = 1.0
RHO_INIT = 1.0
# beta of the closed-form step: the weight of ||r - u_{k-1}||^2 against the summed data term, i.e. a
# Wiener noise-to-signal ratio (|K|^2 <= 1 for a normalised kernel): 0.01 deconvolves the frequencies
# the kernel keeps above 10 % and leaves the rest to the prior.
BETA_INIT = 0.01
THETA_INIT = 0.01
P_INIT = 0.5
# Initial weight scale of the last convolution of G~ and F~ (the prox networks' residual branches):
# with the standard scale an untrained IPMM adds O(1) noise to the image (more through the deep
# RCAB stacks). Starting at 1% keeps an untrained stage close to the plain gradient steps, the usual
# start of an unrolled network, while (unlike a zero init) every layer receives gradients at once.
TAIL_GAIN = 0.01
# The noise feature t = log((sigma + SIGMA_FLOOR) / SIGMA_REF): 0 near 1 % noise, -2.3 at none; the
# floor keeps it finite at sigma = 0. Gains exp(a t) are bounded by clipping a t to +-GAIN_LOG_BOUND.
SIGMA_FLOOR = 1e-3
SIGMA_REF = 1e-2
GAIN_LOG_BOUND = 5.0


# A user's proximal module: called once per stage with that stage's `nnx.Rngs`.
ProxFactory = Callable[[nnx.Rngs], nnx.Module]


def noise_feature(sigma):
    """t = log((sigma + SIGMA_FLOOR) / SIGMA_REF) for noise stds sigma >= 0 `[N]` (no gradient)."""
    sigma = jax.lax.stop_gradient(jnp.maximum(jnp.asarray(sigma, jnp.float32), 0.0))
    return jnp.log((sigma + SIGMA_FLOOR) / SIGMA_REF)


def noise_gain(a, t):
    """exp(a t): a learned scale factor per image `[N]`, 1 at a = 0."""
    return jnp.exp(jnp.clip(a * t, -GAIN_LOG_BOUND, GAIN_LOG_BOUND))


def _scaled(theta, scale, ndim: int):
    """theta, or theta times a per-image `scale [N]` broadcast against rank-`ndim` values."""
    return theta if scale is None else theta * steps.per_image(scale, ndim)


def _inverse_softplus(y: float) -> float:
    return math.log(math.expm1(y))


def positive(value: float) -> nnx.Param:
    """A scalar parameter stored before softplus, initialised so that softplus(raw) = value."""
    return nnx.Param(jnp.asarray(_inverse_softplus(value), jnp.float32))


class SoftThreshold(nnx.Module):
    """Soft(y, theta) of eq. (13) with a learned theta = softplus(raw_theta) > 0."""

    def __init__(self, theta: float = THETA_INIT):
        self.raw_theta = positive(theta)

    @property
    def theta(self):
        """The threshold theta = softplus(raw_theta) > 0."""
        return jax.nn.softplus(self.raw_theta[...])

    def __call__(self, y, scale=None):
        """Soft(y, theta), with theta times `scale` (per image, broadcast against y) when given."""
        return shrinkage.soft_threshold(y, _scaled(self.theta, scale, y.ndim))


class GST(nnx.Module):
    """GST_p(y, theta) of eqs. (19)-(20): learned theta > 0 and p = sigmoid(p0) in (0, 1).

    `solver="fixed_point"` takes the paper's 3 steps of eq. (20), `solver="halley"` one step of
    eq. (N2) (`iterations` overrides either count). `grad="unrolled"` differentiates those steps
    (`shrinkage.gst`); `grad="implicit"` gives the same value with the derivatives of the exact prox
    (`shrinkage.gst_implicit`: implicit function theorem, O(1) memory per element, reverse mode only).
    """

    def __init__(self, theta: float = THETA_INIT, p: float = P_INIT, iterations: int | None = None,
                 delta: float = 1e-5, grad: str = "unrolled", solver: str = "fixed_point"):
        _check_gst_grad(grad)
        _check_gst_solver(solver)
        self.raw_theta = positive(theta)
        self.p0 = nnx.Param(jnp.asarray(math.log(p / (1 - p)), jnp.float32))
        self.iterations = SOLVER_ITERATIONS[solver] if iterations is None else iterations
        self.delta = delta
        self.grad = grad
        self.solver = solver

    @property
    def theta(self):
        """The threshold theta = softplus(raw_theta) > 0."""
        return jax.nn.softplus(self.raw_theta[...])

    @property
    def p(self):
        """The exponent p = sigmoid(p0) in (0, 1)."""
        return jax.nn.sigmoid(self.p0[...])

    def __call__(self, y, scale=None):
        """GST_p(y, theta), with theta times `scale` (per image, broadcast against y) when given."""
        theta = _scaled(self.theta, scale, y.ndim)
        if self.grad == "implicit":
            return shrinkage.gst_implicit(y, theta, self.p, self.iterations, self.delta, self.solver)
        return _gst_recomputed(y, theta, self.p, self.iterations, self.delta, self.solver)


# The unrolled derivative, with the solver's steps recomputed in the backward pass rather than
# stored: saving every step's full-size intermediates (per stage, inside the stage scan) cost more in
# memory traffic than the elementwise recomputation (demo train step, `python -m benchmarks.train_step
# --configs=demo` on the idle 2-core CPU: 0.50 s stored, 0.35 s recomputed).
_gst_recomputed = jax.checkpoint(shrinkage.gst, static_argnums=(3, 4, 5))


def _check_gst_grad(gst_grad: str):
    if gst_grad not in GST_GRADS:
        raise ValueError(f"gst_grad must be one of {GST_GRADS}, got {gst_grad!r}")


def check_stage_unroll(stage_unroll: int, remat: bool):
    """Raise ValueError unless `stage_unroll` is 0 (all stages) or positive, and 1 with remat."""
    if isinstance(stage_unroll, bool) or not isinstance(stage_unroll, int) or stage_unroll < 0:
        raise ValueError(f"stage_unroll must be 0 (all stages) or a positive integer, got {stage_unroll!r}")
    if remat and stage_unroll != 1:
        # Unrolled, XLA schedules the recomputation next to the forward pass and memory does not drop.
        raise ValueError(f"remat needs the rolled stage loop (stage_unroll=1), got {stage_unroll}")


def check_image_step(image_step: str):
    if image_step not in IMAGE_STEPS:
        raise ValueError(f"image_step must be one of {IMAGE_STEPS}, got {image_step!r}")


def _check_gst_solver(gst_solver: str):
    if gst_solver not in GST_SOLVERS:
        raise ValueError(f"gst_solver must be one of {GST_SOLVERS}, got {gst_solver!r}")


class KernelProx(nnx.Module):
    """KPM, eq. (12): h = s + G~(Soft(G(s), theta_1)), paper Fig. 1(c).

    G = conv3x3 (1 -> features) + `rcabs` RCABs; G~ = `rcabs` RCABs + conv3x3 (features -> 1).
    The kernel taps are O(1 / (kh kw)); G sees them multiplied by kh kw (a flat kernel becomes 1)
    and G~'s output is divided by it, so features and thresholds live on the same O(1) scale as
    the image prior's whatever the kernel size.
    """

    def __init__(self, features: int = 32, rcabs: int = 2, reduction: int = REDUCTION,
                 noise_conditional: bool = False, *, rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        self.extractor_head = conv(1, features, 3, rngs=rngs)
        self.extractor = RCABs(features, rcabs, reduction, rngs=rngs)
        self.threshold = SoftThreshold()
        self.inverse = RCABs(features, rcabs, reduction, rngs=rngs)
        self.inverse_tail = conv(features, 1, 3, gain=TAIL_GAIN, rngs=rngs)
        # a of theta_1 * exp(a t) (noise-conditional variant only)
        self.noise_gain = nnx.Param(jnp.zeros((), jnp.float32)) if noise_conditional else None

    def __call__(self, s, t=None):
        """h_{k-1/2} from s_k `[N, k, k]`; `t [N]`, the noise feature, for a noise-conditional KPM."""
        taps = s.shape[-2] * s.shape[-1]
        x = self.extractor(self.extractor_head((s * taps)[..., None]))
        scale = None if self.noise_gain is None or t is None else noise_gain(self.noise_gain[...], t)
        x = self.inverse_tail(self.inverse(self.threshold(x, scale)))
        return s + x[..., 0] / taps


class ImagePriorExtractor(nnx.Module):
    """F_k: conv3x3 (C -> widths[0]) and the multi-scale encoder-decoder; its decoder levels (1x1
    fusion convolution + RCABs) are the multi-scale prior features, one per scale."""

    def __init__(self, channels: int, widths: Sequence[int], rcabs: int,
                 reduction: int = REDUCTION, *, rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        self.head = conv(channels, widths[0], 3, rngs=rngs)
        self.body = EncoderDecoder(widths, rcabs, reduction=reduction, rngs=rngs)

    def __call__(self, x) -> tuple[jax.Array, ...]:
        return self.body(self.head(x))


class InverseImagePriorExtractor(nnx.Module):
    """F~_k, symmetric to F_k: an encoder-decoder whose encoder merges the thresholded feature of
    each scale (1x1 fusion convolution + RCABs), then conv3x3 (widths[0] -> C)."""

    def __init__(self, channels: int, widths: Sequence[int], rcabs: int,
                 reduction: int = REDUCTION, *, rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        self.body = EncoderDecoder(widths, rcabs, multi_input=True, reduction=reduction,
                                   rngs=rngs)
        self.tail = conv(widths[0], channels, 3, gain=TAIL_GAIN, rngs=rngs)

    def __call__(self, features):
        return self.tail(self.body(features)[0])


class ImageProx(nnx.Module):
    """IPMM, eq. (18): u = r + F~(GST_p(F(r), theta_2)), with an independent threshold per scale
    (`thresholds[i]`, each with its learned `theta` and, for GST, `p`)."""

    def __init__(self, channels: int = 3, features: int = 64, scales: int = 3, rcabs: int = 2,
                 threshold: str = "gst", reduction: int = REDUCTION, gst_grad: str = "unrolled",
                 gst_solver: str = "fixed_point", noise_conditional: bool = False, *,
                 rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        if threshold not in THRESHOLDS:
            raise ValueError(f"threshold must be one of {THRESHOLDS}, got {threshold!r}")
        _check_gst_grad(gst_grad)
        _check_gst_solver(gst_solver)
        widths = scale_widths(features, scales)
        self.multiple = 2 ** (scales - 1)
        # The noise-conditional F_k reads the noise map t as one more channel.
        self.extractor = ImagePriorExtractor(channels + int(noise_conditional), widths, rcabs,
                                             reduction, rngs=rngs)
        self.thresholds = nnx.List(
            [GST(grad=gst_grad, solver=gst_solver) if threshold == "gst" else SoftThreshold()
             for _ in widths])
        self.inverse = InverseImagePriorExtractor(channels, widths, rcabs, reduction, rngs=rngs)
        # a_i of theta_2,i * exp(a_i t), one per scale (noise-conditional variant only)
        self.noise_gains = (nnx.Param(jnp.zeros((len(widths),), jnp.float32))
                            if noise_conditional else None)

    def __call__(self, r, t=None):
        """u_k from r_k `[N, H, W, C]`; `t [N]`, the noise feature, for a noise-conditional IPMM."""
        if (self.noise_gains is None) != (t is None):
            raise ValueError("a noise-conditional ImageProx needs the noise feature t, and only it "
                             "takes one")
        # Pad to a multiple of 2^(scales-1) so that the x0.5 / x2 resamplings invert each other.
        H, W = r.shape[1:3]
        ph, pw = -H % self.multiple, -W % self.multiple
        pads = ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0))
        x = jnp.pad(r, pads, mode="symmetric") if ph or pw else r
        if t is not None:
            noise_map = jnp.broadcast_to(steps.per_image(t, 4), x.shape[:3] + (1,)).astype(x.dtype)
            x = jnp.concatenate([x, noise_map], axis=-1)
        features = self.extractor(x)
        if t is None:
            features = [shrink(f) for shrink, f in zip(self.thresholds, features)]
        else:
            gains = self.noise_gains[...]
            features = [shrink(f, noise_gain(gains[i], t))
                        for i, (shrink, f) in enumerate(zip(self.thresholds, features))]
        x = self.inverse(features)
        return r + x[:, pads[1][0]:pads[1][0] + H, pads[2][0]:pads[2][0] + W, :]


class Stage(nnx.Module):
    """One unrolled iteration: KGDM (eq. 11) -> KPM (eq. 12) -> eq. (14) -> IGDM (eq. 17) -> IPMM
    (eq. 18).

    Learned scalars by name: `mu` (mu_k of eq. 11), `rho` (rho_k of eq. 17; or `beta`, the prior
    weight of the closed-form image step, with `image_step="closed_form"`),
    `kernel_prox.threshold.theta` (theta_1k of eq. 12), `image_prox.thresholds[i].theta` and `.p`
    (theta_2k and p of scale i, eqs. 18-20). In `MGSTNet.stages` every one is stacked over the
    stages, so the same names give arrays `[K]`.
    """

    def __init__(self, *, channels: int, scales: int, kernel_rcabs: int, image_rcabs: int,
                 features: int, kernel_features: int, boundary: str, threshold: str,
                 kernel_prox: bool | ProxFactory, reduction: int, gst_grad: str = "unrolled",
                 gst_solver: str = "fixed_point", image_prox: ProxFactory | None = None,
                 image_step: str = "gradient", noise_conditional: bool = False,
                 rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        check_image_step(image_step)
        self.boundary = boundary
        self.image_step = image_step
        self.raw_mu = positive(MU_INIT)
        if image_step == "gradient":  # one parameter or the other: a gradient-step model's are as before
            self.raw_rho = positive(RHO_INIT)
        else:
            self.raw_beta = positive(BETA_INIT)
        # a of mu_k exp(a t) and of rho_k (or beta_k) exp(a t) (noise-conditional variant only)
        self.noise_gains = nnx.Param(jnp.zeros((2,), jnp.float32)) if noise_conditional else None
        # A user's module takes no noise input: only the step sizes are conditioned then.
        self.builtin_kernel_prox = not callable(kernel_prox)
        self.builtin_image_prox = image_prox is None
        if callable(kernel_prox):  # a user's KPM: s [N, k, k] -> kernel of the same shape
            self.kernel_prox = kernel_prox(nnx.Rngs(rngs()))
        else:
            self.kernel_prox = (KernelProx(kernel_features, kernel_rcabs, reduction,
                                           noise_conditional, rngs=rngs)
                                if kernel_prox else None)
        if image_prox is not None:  # a user's IPMM: r [N, H, W, C] -> u of the same shape
            self.image_prox = image_prox(nnx.Rngs(rngs()))
        else:
            self.image_prox = ImageProx(channels, features, scales, image_rcabs, threshold,
                                        reduction, gst_grad, gst_solver, noise_conditional,
                                        rngs=rngs)

    @property
    def mu(self):
        """mu_k, the kernel step size of eq. (11): softplus(raw_mu) > 0."""
        return jax.nn.softplus(self.raw_mu[...])

    @property
    def rho(self):
        """rho_k, the image step size of eq. (17): softplus(raw_rho) > 0."""
        return jax.nn.softplus(self.raw_rho[...])

    @property
    def beta(self):
        """beta_k, the prior weight of the closed-form image step: softplus(raw_beta) > 0."""
        return jax.nn.softplus(self.raw_beta[...])

    def _gain(self, i: int, t):
        """The noise-conditional factor of step size i (0: mu, 1: rho or beta), or 1."""
        if t is None:
            return 1.0
        return noise_gain(self.noise_gains[...][i], t)

    def _check_noise(self, t):
        if (self.noise_gains is None) != (t is None):
            raise ValueError("a noise-conditional stage needs the noise feature t, and only it takes one")

    def image_update(self, u, h, g, t=None):
        """r_k from u_{k-1} and h_k: IGDM (eq. 17) or the closed-form step, in at least float32.
        `t [N]`: the noise feature, for a noise-conditional stage."""
        self._check_noise(t)
        if self.image_step == "gradient":
            return steps.image_step(u, h, g, self.rho * self._gain(1, t), self.boundary)
        return steps.closed_form_image_step(u, h, g, self.beta * self._gain(1, t), self.boundary)

    def prox_image(self, r, t=None):
        """IPMM (eq. 18) on r_k, with the noise feature `t [N]` for a noise-conditional stage."""
        if t is not None and self.builtin_image_prox:
            return self.image_prox(r, t)
        return self.image_prox(r)

    def __call__(self, h, u, g, t=None):
        """(h_{k-1}, u_{k-1}, g) -> (h_k, u_k, s_k, r_k); `t [N]` is the noise feature
        (`noise_feature(sigma)`) of a noise-conditional stage, None otherwise.

        The gradient steps (FFTs) run in at least float32; the image prior networks get r_k in the
        images' dtype (e.g. bfloat16 for mixed precision) and the kernels stay in float32.
        """
        self._check_noise(t)
        dtype = u.dtype
        h, u, g = _at_least_float32(h), _at_least_float32(u), _at_least_float32(g)
        s = steps.kernel_step(h, u, g, self.mu * self._gain(0, t), self.boundary)  # eq. (11)
        if self.kernel_prox is None:                                          # eq. (12)
            h_half = s
        elif t is not None and self.builtin_kernel_prox:
            h_half = self.kernel_prox(s, t)
        else:
            h_half = self.kernel_prox(s)
        h = steps.normalize_kernel(h_half.astype(s.dtype))                    # eq. (14)
        r = self.image_update(u, h, g, t).astype(dtype)                       # eq. (17)
        u = self.prox_image(r, t)                                             # eq. (18)
        return h, u.astype(dtype), s, r


def _at_least_float32(x):
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


@struct.dataclass
class MGSTNetOutput:
    """Per-stage results, each stacked over the stages on a leading axis (`[-1]` is the output).

    images: u_k [K, N, H, W, C] (eq. 18); kernels: h_k [K, N, k, k] (eq. 14: nonnegative, sum 1);
    kgdm_kernels: s_k of eq. (11), the kernel after the gradient step KGDM and before KPM (paper
    Table II compares s/||s||_1 with h); igdm_images: r_k of eq. (17), the image after the gradient
    step IGDM and before IPMM.
    """

    images: jax.Array
    kernels: jax.Array
    kgdm_kernels: jax.Array
    igdm_images: jax.Array


class MGSTNet(nnx.Module):
    """Multi-scale generalized shrinkage threshold network for blind deblurring.

    `g [N, H, W, C]` (any H, W >= kernel_size) -> MGSTNetOutput. `threshold="soft"` replaces GST_p by
    the soft threshold in IPMM (ablation); `kernel_prox=False` drops KPM (KGDM + eq. 14 only).

    Your own priors: `image_prox` (default None, the paper's IPMM) and `kernel_prox` (default True,
    the paper's KPM) also take a factory `(rngs: nnx.Rngs) -> nnx.Module`, called once per stage
    (each stage its own parameters, stacked like the paper's modules). The image prox module maps
    r_k `[N, H, W, C]` to u_k of the same shape (eq. 18); the kernel prox module maps s_k
    `[N, k, k]` to a kernel of the same shape, which eq. (14) then makes nonnegative with sum 1.
    `unroll.models.priors` has ready ones (a residual U-Net, the classical Haar + GST_p prior):

    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from unroll.models import priors
    >>> net = MGSTNet(stages=2, channels=1, kernel_size=5, kernel_prox=False,
    ...               image_prox=lambda rngs: priors.UNetDenoiser(1, features=4, rngs=rngs),
    ...               rngs=nnx.Rngs(0))
    >>> net(jnp.zeros((1, 16, 16, 1))).images.shape  # [stages, N, H, W, C]
    (2, 1, 16, 16, 1)
    >>> grads = nnx.grad(lambda m: m(jnp.ones((1, 16, 16, 1))).images[-1].sum())(net)
    >>> grads.stages.image_prox.tail.kernel.shape  # the user's module, one per stage
    (2, 3, 3, 4, 1)

    `gst_grad` (one of GST_GRADS) chooses how GST_p is differentiated: "unrolled" through its
    fixed-point iterations, "implicit" by the implicit function theorem at the exact prox (same
    forward value; reverse mode only, see `GST`). `gst_solver` (one of GST_SOLVERS) finds GST_p's
    root by the paper's fixed-point steps or one Halley step (see `GST`). `reduction` is the RCABs'
    channel-attention ratio (RCAN's 16).

    The K stages do not share parameters, but they are stored stacked: `self.stages` is one `Stage`
    whose every parameter has a leading axis of length K (`stage(k)` gives stage k on its own), and
    the forward pass is a `lax.scan` over that axis. XLA then compiles one stage body whatever K,
    and the train step (gradients, optimiser state) has the leaves of one stage, not K times as
    many, so compile time does not grow with the stage count. `remat=True` checkpoints the scan body:
    the backward pass recomputes each stage's activations, so memory holds every stage's inputs
    (h, u) but the activations of only one stage.

    `stage_unroll` is the scan's unroll: stages per loop iteration, 0 for all of them (no loop).
    Unrolled, the backward pass reads each stage's saved activations where the forward pass left
    them; rolled, the loop copies them into per-stage stacked buffers and back out, which on CPU is
    memory traffic of the order of the activations themselves (paper train step on this project's
    2-core CPU: about 10 % of the step). The price is compile time, which then grows with the
    number of stages unrolled. `remat` needs the rolled loop (`stage_unroll=1`).
    """

    def __init__(self, stages: int = 3, scales: int = 3, kernel_rcabs: int = 2,
                 image_rcabs: int = 2, channels: int = 3, kernel_size: int = 15,
                 features: int = 64, kernel_features: int = 32, boundary: str = "symmetric",
                 threshold: str = "gst", kernel_prox: bool = True, remat: bool = False,
                 reduction: int = REDUCTION, gst_grad: str = "unrolled",
                 gst_solver: str = "fixed_point", stage_unroll: int = 1,
                 image_prox: ProxFactory | None = None, image_step: str = "gradient",
                 noise_conditional: bool = False, image_init: str = "blurred", *,
                 rngs: nnx.Rngs | None = None):
        for name, value in (("stages", stages), ("scales", scales), ("channels", channels),
                            ("features", features), ("kernel_features", kernel_features),
                            ("reduction", reduction)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if kernel_rcabs < 0 or image_rcabs < 0:
            raise ValueError("RCAB counts must be >= 0")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        if boundary not in ops.BOUNDARIES:
            raise ValueError(f"boundary must be one of {ops.BOUNDARIES}, got {boundary!r}")
        if threshold not in THRESHOLDS:
            raise ValueError(f"threshold must be one of {THRESHOLDS}, got {threshold!r}")
        _check_gst_grad(gst_grad)
        _check_gst_solver(gst_solver)
        check_image_step(image_step)
        check_stage_unroll(stage_unroll, remat)
        if image_init not in IMAGE_INITS:
            raise ValueError(f"image_init must be one of {IMAGE_INITS}, got {image_init!r}")
        rngs = as_keys(nnx.Rngs(0) if rngs is None else rngs)
        self.channels = channels
        self.kernel_size = kernel_size
        self.remat = remat
        self.num_stages = stages
        self.stage_unroll = stage_unroll
        self.image_step = image_step
        self.noise_conditional = noise_conditional
        self.image_init = image_init
        # Built one by one (each its own random draws), then stacked into one module.
        graphdefs, states = zip(*(nnx.split(Stage(
            channels=channels, scales=scales, kernel_rcabs=kernel_rcabs, image_rcabs=image_rcabs,
            features=features, kernel_features=kernel_features, boundary=boundary,
            threshold=threshold, kernel_prox=kernel_prox, reduction=reduction, gst_grad=gst_grad,
            gst_solver=gst_solver, image_prox=image_prox, image_step=image_step,
            noise_conditional=noise_conditional, rngs=rngs))
            for _ in range(stages)))
        self.stages = nnx.merge(graphdefs[0], jax.tree.map(lambda *xs: jnp.stack(xs), *states))

    def stage(self, k: int) -> Stage:
        """Stage k as its own module: a copy (change parameters through `self.stages`)."""
        graphdef, state = nnx.split(self.stages)
        return nnx.merge(graphdef, jax.tree.map(lambda x: x[k], state))

    def initial_kernel(self, n: int):
        """h_0: the uniform kernel, one per image."""
        h0 = jnp.asarray(kernels.uniform(self.kernel_size), jnp.float32)
        return jnp.broadcast_to(h0, (n, self.kernel_size, self.kernel_size))

    def initial_image(self, g, h0, trusted=None):
        """u_0 for images `g [N, H, W, C]` and initial kernels `h0 [N, k, k]`: g itself (the paper's,
        `image_init="blurred"`) or, with `image_init="nonblind"`, g restored with h_0 by
        `unroll.nonblind` (clipped to [0, 1], no gradient: it depends on no parameter) for each
        image where that restoration passes `unroll.verdict.passes` (or, given `trusted [N]` bool,
        where that says: the warm start's own verdict, `unroll.classical.warm.initial_state`), g
        elsewhere. From a warm start, the first kernel step (eq. 11) then compares h_0 against a
        sharp estimate; from the blurred g it pulls h_0 towards the identity, and a good h_0 is
        lost."""
        if self.image_init == "blurred":
            return g
        g32, h32 = _at_least_float32(g), h0.astype(jnp.float32)
        u0 = nonblind.deconvolve_batch(g32, h32)
        # Only a restoration that passes the no-reference check (`unroll.verdict`): from a failed
        # estimate (rings beyond the input's range, or a diffuse kernel) the stages start from g.
        # Checked before clipping, as the classical check: clipping would hide the ringing.
        if trusted is None:
            ok = verdict.passes(g32, u0, h32)[:, None, None, None]
        else:
            ok = jnp.broadcast_to(jnp.asarray(trusted, bool), g.shape[:1])[:, None, None, None]
        return lax.stop_gradient(jnp.where(ok, jnp.clip(u0, 0.0, 1.0), g32)).astype(g.dtype)

    def noise_features(self, g, sigma=None):
        """t [N] of a noise-conditional network from the noise stds `sigma` (`[N]` or a scalar, on the
        images' [0, 1] scale), by default `unroll.noise.estimate_batch(g)`; None for the paper's."""
        if not self.noise_conditional:
            if sigma is not None:
                raise ValueError("sigma is for a noise-conditional MGSTNet (noise_conditional=True)")
            return None
        sigma = noise.estimate_batch(g) if sigma is None else jnp.asarray(sigma, jnp.float32)
        return noise_feature(jnp.broadcast_to(sigma, g.shape[:1]))

    def __call__(self, g, h0=None, sigma=None, trusted=None) -> MGSTNetOutput:
        """The K stages on `g [N, H, W, C]` from h_0 = `h0` (`[N, k, k]` or `[k, k]`, a kernel:
        nonnegative, summing to one, e.g. `steps.normalize_kernel(h)`), by default the uniform
        kernel (the paper's; passing it gives bit for bit the same result), and u_0 =
        `initial_image(g, h_0, trusted)` (g itself unless `image_init="nonblind"`).

        `sigma`, for a noise-conditional network only: the images' noise stds (`[N]` or a scalar),
        by default estimated from `g` (`unroll.noise.estimate_batch`)."""
        if g.ndim != 4 or g.shape[-1] != self.channels:
            raise ValueError(f"expected images [N, H, W, {self.channels}], got {g.shape}")
        t = self.noise_features(g, sigma)
        k = self.kernel_size
        if h0 is None:
            h0 = self.initial_kernel(g.shape[0])
        else:
            h0 = jnp.asarray(h0)
            if h0.shape[-2:] != (k, k) or h0.ndim not in (2, 3) or (h0.ndim == 3 and h0.shape[0] != g.shape[0]):
                raise ValueError(f"h0 must be [{k}, {k}] or [{g.shape[0]}, {k}, {k}], got {h0.shape}")
            h0 = jnp.broadcast_to(h0, (g.shape[0], k, k)).astype(jnp.float32)
        # h_0 (at least float32, like every kernel the stages return), u_0 = g or its restoration.
        h = h0.astype(_at_least_float32(g).dtype)
        u = self.initial_image(g, h, trusted)
        graphdef, state = nnx.split(self.stages)

        def body(carry, stage_state):
            h, u = carry
            h, u, s, r = nnx.merge(graphdef, stage_state)(h, u, g, t)
            return (h, u), (u, h, s, r)

        # A checkpoint per stage needs the scan: unrolled, XLA (at least on CPU) schedules the
        # recomputation next to the forward pass and the backward pass's memory does not drop.
        body = jax.checkpoint(body, prevent_cse=False) if self.remat else body
        if self.num_stages == 1:  # XLA:CPU (jax 0.10) mis-lays out FFTs in a one-trip loop
            _, out = body((h, u), jax.tree.map(lambda x: x[0], state))
            return MGSTNetOutput(*(x[None] for x in out))
        unroll = self.num_stages if self.stage_unroll == 0 else min(self.stage_unroll, self.num_stages)
        _, outputs = jax.lax.scan(body, (h, u), state, unroll=unroll)
        return MGSTNetOutput(*outputs)
