"""Image priors that can replace MGSTNet's IPMM (eq. 18): each maps r_k `[N, H, W, C]` to u_k of the
same shape and plugs in through `MGSTNet(image_prox=factory)`.

  * `paper`: the paper's multi-scale encoder-decoder with GST_p (`mgstnet.ImageProx`, the default).
  * `unet`: `UNetDenoiser`, a small residual U-Net denoiser, u = r + D(r) (plug-and-play style).
  * `haar_gst`: `HaarGST`, the classical fixed prior: an orthonormal Haar transform with GST_p on its
    detail bands, u = W^T GST_p(W r) (as in `unroll.classical.unrolled.wavelet_prox`), with a learned
    theta and p per level: the exact prox of theta ||W_d u||_p^p, no convolution at all.

`image_prox_factory(name, ...)` gives the factory for `Config.image_prior`.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> prox = image_prox_factory("haar_gst", channels=1, scales=2)(nnx.Rngs(0))
>>> prox(jnp.ones((1, 8, 8, 1))).shape  # a flat image has no detail: unchanged
(1, 8, 8, 1)
>>> float(jnp.abs(prox(jnp.ones((1, 8, 8, 1))) - 1).max()) < 1e-6
True
"""

from __future__ import annotations

from flax import nnx

from unroll import wavelets
from unroll.models.blocks import Keys, ResBlocks, as_keys, conv, deconv, strided_conv
from unroll.models.mgstnet import GST, TAIL_GAIN, THRESHOLDS, ProxFactory, SoftThreshold

IMAGE_PRIORS = ("paper", "unet", "haar_gst")


def _threshold(threshold: str, gst_grad: str, gst_solver: str) -> nnx.Module:
    if threshold not in THRESHOLDS:
        raise ValueError(f"threshold must be one of {THRESHOLDS}, got {threshold!r}")
    return GST(grad=gst_grad, solver=gst_solver) if threshold == "gst" else SoftThreshold()


class UNetDenoiser(nnx.Module):
    """u = r + D(r): a small residual U-Net (Ronneberger et al. 2015, as in DRUNet-style denoisers).

    `scales` levels of width features x 2^i, each `blocks` residual blocks in the encoder and in
    the decoder; down by a strided 3x3 convolution, up by a transposed one (cropped to the skip's
    size, so any H, W works), skips added. The last convolution starts at `TAIL_GAIN` of the usual
    scale, so that an untrained stage is close to its gradient step (like the paper's prior).

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> denoiser = UNetDenoiser(channels=3, features=4, scales=2, rngs=nnx.Rngs(0))
    >>> denoiser(jnp.zeros((2, 13, 10, 3))).shape
    (2, 13, 10, 3)
    """

    def __init__(self, channels: int = 3, features: int = 16, scales: int = 2, blocks: int = 1, *,
                 rngs: nnx.Rngs | Keys):
        if min(channels, features, scales) < 1 or blocks < 0:
            raise ValueError(f"need channels, features, scales >= 1 and blocks >= 0, got "
                             f"{channels}, {features}, {scales}, {blocks}")
        rngs = as_keys(rngs)
        widths = [features * 2 ** i for i in range(scales)]
        pairs = list(zip(widths[:-1], widths[1:]))
        self.head = conv(channels, widths[0], 3, rngs=rngs)
        self.encoders = nnx.List([ResBlocks(w, blocks, rngs=rngs) for w in widths])
        self.downs = nnx.List([strided_conv(a, b, 3, stride=2, rngs=rngs) for a, b in pairs])
        self.ups = nnx.List([deconv(b, a, 3, stride=2, rngs=rngs) for a, b in pairs])
        self.decoders = nnx.List([ResBlocks(a, blocks, rngs=rngs) for a, _ in pairs])
        self.tail = conv(widths[0], channels, 3, gain=TAIL_GAIN, rngs=rngs)

    def __call__(self, r):
        x = self.head(r)
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(x)
            if i < len(self.downs):
                skips.append(x)
                x = nnx.relu(self.downs[i](x))
        for i in reversed(range(len(self.ups))):
            skip = skips[i]
            x = self.ups[i](x)[:, :skip.shape[1], :skip.shape[2]] + skip
            x = self.decoders[i](x)
        return r + self.tail(x).astype(r.dtype)


class HaarGST(nnx.Module):
    """u = W^T GST_p(W r, theta_l) on the detail bands of an orthonormal `levels`-level Haar transform W,
    the coarsest approximation band kept; one learned theta and p per level (`thresholds[l]`, finest
    first). W orthonormal makes this the exact prox of sum_l theta_l ||W_l u||_p^p (with the soft
    threshold, p = 1) once GST_p's fixed point has converged.

    >>> import jax, jax.numpy as jnp
    >>> prox = HaarGST(levels=2)  # theta = 0.01, p = 0.5 at the start
    >>> r = 0.5 + 1e-3 * jax.random.normal(jax.random.key(0), (1, 10, 9, 3))  # faint noise
    >>> u = prox(r)
    >>> u.shape, bool(u.std() < 0.5 * r.std())  # details below the threshold are removed
    ((1, 10, 9, 3), True)
    """

    def __init__(self, levels: int = 3, threshold: str = "gst", gst_grad: str = "unrolled",
                 gst_solver: str = "fixed_point"):
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        self.levels = levels
        self.thresholds = nnx.List([_threshold(threshold, gst_grad, gst_solver) for _ in range(levels)])

    def __call__(self, r):
        approx, details = wavelets.haar_forward(r, self.levels)
        details = tuple(tuple(shrink(band) for band in bands)
                        for shrink, bands in zip(self.thresholds, details))
        return wavelets.haar_inverse(approx, details).astype(r.dtype)


def image_prox_factory(name: str, *, channels: int = 3, features: int = 64, scales: int = 3,
                       rcabs: int = 2, threshold: str = "gst", gst_grad: str = "unrolled",
                       gst_solver: str = "fixed_point") -> ProxFactory | None:
    """The `image_prox` factory of MGSTNet for the image prior `name` (one of IMAGE_PRIORS); None for
    `paper` (MGSTNet's own IPMM, built as it always was). The sizes mean what they mean for the
    paper's prior: `features` the full-resolution width, `scales` the levels (of the U-Net, or of
    the Haar transform), `rcabs` the blocks per level (residual blocks in the U-Net); `threshold`,
    `gst_grad` and `gst_solver` choose the Haar prior's shrinkage like the paper's."""
    if name not in IMAGE_PRIORS:
        raise ValueError(f"image_prior must be one of {IMAGE_PRIORS}, got {name!r}")
    if name == "unet":
        return lambda rngs: UNetDenoiser(channels, features, scales, rcabs, rngs=rngs)
    if name == "haar_gst":
        return lambda rngs: HaarGST(scales, threshold, gst_grad, gst_solver)
    return None


__all__ = ["IMAGE_PRIORS", "HaarGST", "UNetDenoiser", "image_prox_factory"]
