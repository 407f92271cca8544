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

(SSIM, gradient and adversarial losses of the CNN baselines belong here too.)
"""

from __future__ import annotations

import jax.numpy as jnp

from unroll import ops

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
    """Batch-mean Charbonnier and kernel loss of every stage: dict of arrays `[stages]`."""
    return {
        "charbonnier": jnp.stack([jnp.mean(charbonnier(u, sharp)) for u in output.images]),
        "kernel": jnp.stack([jnp.mean(kernel_loss(h, sharp, blurred, boundary))
                             for h in output.kernels]),
    }


def mgstnet_loss(output, sharp, blurred, alpha: float = KERNEL_LOSS_WEIGHT,
                 boundary: str = "symmetric"):
    """Eq. (21): sum over stages of Charbonnier + alpha * sum over stages of the kernel loss.

    `output` has per-stage `images` and `kernels` (an `MGSTNetOutput`); `sharp` is u_gt and
    `blurred` is g, both `[N, H, W, C]`. Returns the batch mean, a scalar.
    """
    terms = mgstnet_loss_terms(output, sharp, blurred, boundary)
    return jnp.sum(terms["charbonnier"]) + alpha * jnp.sum(terms["kernel"])
