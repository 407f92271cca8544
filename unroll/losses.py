"""Training losses. Every per-image loss returns `[N]`; the combined losses return a scalar (batch mean).

MGSTNet (paper Section II-C, eqs. 21-23):
  L = sum_k Charbonnier(u_k, u_gt) + alpha sum_k ||h_k * u_gt - g||_1,   alpha = 0.05.

Charbonnier is per pixel: mean over pixels and channels of sqrt((u - u_gt)^2 + eps^2). Eq. (22) writes
sqrt(||u_k - u_gt||^2 + eps^2) with the norm over the whole image, which would make it an L2 loss
(eps = 1e-3 then never matters) rather than the robust L1-like penalty the text describes ("an
approximation of the l1-loss"); the paper cites MPRNet [47] for it, whose implementation is the
per-pixel mean, and eps = 1e-3 is a per-pixel scale for images in [0, 1]. The kernel loss's L1 norm is
likewise a mean over pixels and channels, so both terms are independent of the image size and alpha
keeps its meaning on any crop.

CNN baselines (each returns the batch mean, a scalar; `sharp` is the full-resolution ground truth,
brought to every output scale inside the loss the way the model builds its input pyramid, see
`unroll.multiscale.target_like`):
  MADN (Zhu et al., eqs. 10-20): `madn_generator_loss`, `madn_discriminator_loss`;
  IDC (Wang et al., eqs. 2-6): `idc_loss` = sum over scales of L2 + 0.1 (1 - SSIM) + 0.1 L_grad;
  MTWDN (Cheng et al., eq. 2): `mtwdn_loss` = sum_i alpha_i / T_i ||F_i - I_i||^2,
  alpha = (1, 1, 5).
Norms are per-element means (N^i, T_i = number of elements), like the Charbonnier term above, so
the papers' weights keep their meaning on any crop size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from unroll import metrics, ops
from unroll.multiscale import gradient_map, target_like

CHARBONNIER_EPS = 1e-3
KERNEL_LOSS_WEIGHT = 0.05


def charbonnier(x, y, eps: float = CHARBONNIER_EPS):
    """Per-image mean of sqrt((x - y)^2 + eps^2) over pixels and channels (eq. 22), `[N]`."""
    return jnp.mean(jnp.sqrt((x - y) ** 2 + eps ** 2), axis=(1, 2, 3))


def kernel_loss(h, sharp, blurred, boundary: str = "symmetric"):
    """Eq. (23): per-image mean of |h * u_gt - g| over pixels and channels, `[N]`.

    Uses the same blur (and boundary) as the degradation, so the true kernel scores the noise level.
    """
    return jnp.mean(jnp.abs(ops.blur(sharp, h, boundary) - blurred), axis=(1, 2, 3))


def mgstnet_loss_terms(output, sharp, blurred, boundary: str = "symmetric"):
    """Batch-mean Charbonnier and kernel loss of every stage: dict of arrays `[stages]`.

    The stages are stacked and mapped over, not looped over in Python: the compiled loss then has one
    copy of each term whatever the stage count (with `remat`'s scan, compile time stays flat in K).
    """
    images, kernels = jnp.stack(output.images), jnp.stack(output.kernels)
    return {
        "charbonnier": jax.vmap(lambda u: jnp.mean(charbonnier(u, sharp)))(images),
        "kernel": jax.vmap(lambda h: jnp.mean(kernel_loss(h, sharp, blurred, boundary)))(kernels),
    }


def mgstnet_loss(output, sharp, blurred, alpha: float = KERNEL_LOSS_WEIGHT,
                 boundary: str = "symmetric"):
    """Eq. (21): sum over stages of Charbonnier + alpha * sum over stages of the kernel loss.

    `output` has per-stage `images` and `kernels` (an `MGSTNetOutput`); `sharp` is u_gt and
    `blurred` is g, both `[N, H, W, C]`. Returns the batch mean, a scalar.
    """
    terms = mgstnet_loss_terms(output, sharp, blurred, boundary)
    return jnp.sum(terms["charbonnier"]) + alpha * jnp.sum(terms["kernel"])


# --- CNN baselines -------------------------------------------------------------------------------

def _per_image_mean(x):
    return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def _logit_tuple(logits) -> tuple:
    return tuple(logits) if isinstance(logits, (tuple, list)) else (logits,)


# How each baseline resizes its image pyramid, so that the losses' targets are resized alike (the
# models' RESIZE_METHOD; losses do not import models, tests/test_losses.py checks they agree).
MADN_RESIZE_METHOD = "cubic"   # MADN Section 4.1: bicubic
IDC_RESIZE_METHOD = "linear"   # not given; bilinear as in Tao et al.
MTWDN_RESIZE_METHOD = "linear"  # not given; bilinear as in Tao et al.

# MADN, Section 5.1: "lambda = 0.05, phi1 = 0.5, phi2 = 1, alpha = 0.01, beta1 = 0.01, beta2 = 1".
MADN_LAMBDA = 0.05   # eq. (10): adversarial loss
MADN_ALPHA = 0.01    # eq. (11): pixel loss
MADN_PHI1 = 0.5      # eq. (13): gradient-map content loss L^GB_content
MADN_PHI2 = 1.0      # eq. (13): image content loss L^G_content
MADN_BETA1 = 0.01    # eq. (13): L1 between gradient maps of the sharp and the restored image
MADN_BETA2 = 1.0     # eq. (13): L1 between the restored and the sharp image


def madn_loss_terms(output, sharp, scale_weights=None):
    """MADN's content terms, batch means: dict with
    pixel (eq. 12, SN's scales): sum_i w_i / (2 N_i) ||I_i^out - I_i^true||^2;
    gradient_content (L^GB_content, eq. 13): ||M(X_t) - X^_g||_1 / N;
    gradient_l1 (eq. 13, beta1's term): ||M(X_t) - M(X^_b)||_1 / N;
    image_l1 (eq. 13, beta2's term): ||X^_b - X_t||_1 / N.

    `output` is a `MADNOutput`: `images[:-1]` are SN's I_i (coarse to fine), `images[-1]` is G's
    restored image X^_b, `gradients[-1]` is GN's X^_g. The w_i of eq. (12) are not given in the
    paper: 1 for every scale unless `scale_weights` says otherwise. I_i^true is the sharp image
    resized bicubically (Section 4.1) like the model's input pyramid.
    """
    latents, restored = output.images[:-1], output.images[-1]
    weights = (1.0,) * len(latents) if scale_weights is None else tuple(scale_weights)
    if len(weights) != len(latents):
        raise ValueError(f"{len(weights)} scale weights for {len(latents)} scales")
    pixel = sum(w / 2 * jnp.mean((u - target_like(sharp, u, MADN_RESIZE_METHOD)) ** 2)
                for w, u in zip(weights, latents))
    sharp_gradient = gradient_map(sharp)
    return {
        "pixel": jnp.asarray(pixel, jnp.float32),
        "gradient_content": jnp.mean(jnp.abs(sharp_gradient - output.gradients[-1])),
        "gradient_l1": jnp.mean(jnp.abs(sharp_gradient - gradient_map(restored))),
        "image_l1": jnp.mean(jnp.abs(restored - sharp)),
    }


def madn_adversarial_loss(d_fake_logits):
    """Eqs. (14)-(16): sum over the judged outputs of -E[log D(fake)], D = sigmoid(logits).

    `d_fake_logits` is `[N]` (D on the restored image: eq. 15 only) or the pair
    (D(X^_b), D(X^_g)) from `MADN.fake_logits` (eq. 15 + eq. 16). -log sigmoid(l) = softplus(-l)
    is computed with log_sigmoid, stable for confident discriminators.
    """
    return sum(jnp.mean(-jax.nn.log_sigmoid(z)) for z in _logit_tuple(d_fake_logits))


def madn_generator_loss(output, sharp, d_fake_logits, *, lam: float = MADN_LAMBDA,
                        alpha: float = MADN_ALPHA, phi1: float = MADN_PHI1,
                        phi2: float = MADN_PHI2, beta1: float = MADN_BETA1,
                        beta2: float = MADN_BETA2, scale_weights=None):
    """Eq. (10): L_G = L_content + lambda L_adv, with
    eq. (11): L_content = alpha L_pixel + L_MAE and
    eq. (13): L_MAE = phi1 L^GB_content
                      + phi2 (beta1 ||M(X_t) - M(X^_b)||_1 + beta2 ||X^_b - X_t||_1).

    Eq. (17) restates this with typos (a "+" for phi1's product, lambda dropped, L^GB_adv twice);
    eqs. (10)-(16) are followed. `d_fake_logits`: see `madn_adversarial_loss` (pass
    `model.fake_logits(output)` for both adversarial terms of eq. 14).
    """
    t = madn_loss_terms(output, sharp, scale_weights)
    mae = phi1 * t["gradient_content"] + phi2 * (beta1 * t["gradient_l1"] + beta2 * t["image_l1"])
    return alpha * t["pixel"] + mae + lam * madn_adversarial_loss(d_fake_logits)


def madn_discriminator_loss(d_real_logits, d_fake_logits):
    """Eqs. (18)-(20): L_d = sum over domains of -E[log D(real)] - E[log(1 - D(fake))].

    Logits are `[N]` (image domain, eq. 19) or the pairs from `MADN.real_logits(sharp)` and
    `MADN.fake_logits(output)` (image and gradient-map domains, eqs. 19 + 20); the fakes should be
    stop-gradient'ed by the caller when only D is updated. log(1 - sigmoid(l)) = log_sigmoid(-l).
    """
    real, fake = _logit_tuple(d_real_logits), _logit_tuple(d_fake_logits)
    if len(real) != len(fake):
        raise ValueError(f"{len(real)} real and {len(fake)} fake logit sets")
    return sum(jnp.mean(-jax.nn.log_sigmoid(r)) + jnp.mean(-jax.nn.log_sigmoid(-f))
               for r, f in zip(real, fake))


IDC_SSIM_WEIGHT = 0.1      # alpha of eq. (5)
IDC_GRADIENT_WEIGHT = 0.1  # beta of eq. (5)


def image_gradients(x):
    """Forward differences (d/dy along H, d/dx along W) of `[N, H, W, C]`, no padding."""
    return x[:, 1:] - x[:, :-1], x[:, :, 1:] - x[:, :, :-1]


def gradient_loss(x, y):
    """Per-image L1 distance of the image gradients, mean |dy x - dy y| + mean |dx x - dx y|, `[N]`.

    IDC's eq. (4) writes (grad f, grad x) without naming the distance; L1 is the usual choice for
    gradient losses (it keeps edges sharp rather than averaging them)."""
    (ay, ax), (by, bx) = image_gradients(x), image_gradients(y)
    return _per_image_mean(jnp.abs(ay - by)) + _per_image_mean(jnp.abs(ax - bx))


def ssim_any_size(x, y):
    """`metrics.ssim` (11x11 Gaussian window), or for images smaller than the window (the coarsest
    scale of tiny test crops; the paper's is 64x64) the largest odd window that fits, `[N]`."""
    size = min(x.shape[1], x.shape[2])
    if size >= 11:
        return metrics.ssim(x, y)
    window = size if size % 2 else size - 1
    import dm_pix  # imported here: only IDC's loss needs it

    return dm_pix.ssim(x, y, max_val=1.0, filter_size=window, filter_sigma=1.5)


def idc_loss(output, sharp, alpha: float = IDC_SSIM_WEIGHT, beta: float = IDC_GRADIENT_WEIGHT):
    """Eq. (6): sum over scales of eq. (5), L_mix = L_2 + alpha L_SSIM + beta L_grad (eqs. 2-4).

    L_2 is the per-pixel mean squared error; each scale's ground truth is the sharp image resized
    (bilinear) like the blurred pyramid. Batch mean.
    """
    total = 0.0
    for u in output.images:
        x = target_like(sharp, u, IDC_RESIZE_METHOD)
        mix = (_per_image_mean((u - x) ** 2) + alpha * (1 - ssim_any_size(u, x))
               + beta * gradient_loss(u, x))
        total = total + jnp.mean(mix)
    return total


MTWDN_SCALE_WEIGHTS = (1.0, 1.0, 5.0)  # Section 4: alpha_1 = alpha_2 = 1, alpha_3 = 5 (finest)


def mtwdn_loss(output, sharp, alphas=None):
    """Eq. (2): sum_i alpha_i / T_i ||F_i - I_i||^2 over scales (T_i = number of elements), batch
    mean.

    `alphas` are coarse to fine like `output.images`; by default the paper's (1, 1, 5) for three
    scales and in general 5 for the finest scale, 1 for the others ("we increase [the largest
    scale's] weight"). Ground truths: the sharp image resized (bilinear) like the blurred pyramid.
    """
    k = len(output.images)
    alphas = (1.0,) * (k - 1) + (MTWDN_SCALE_WEIGHTS[-1],) if alphas is None else tuple(alphas)
    if len(alphas) != k:
        raise ValueError(f"{len(alphas)} weights for {k} scales")
    return sum(a * jnp.mean((u - target_like(sharp, u, MTWDN_RESIZE_METHOD)) ** 2)
               for a, u in zip(alphas, output.images))
