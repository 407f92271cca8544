"""MADN: multi-scale generative adversarial deblurring network with gradient guidance (Zhu et al.,
paper Sections 3-4) as Flax NNX modules.

Generator G (paper Fig. 2):
  SN, Section 3.3.1: one encoder-decoder shared by every scale (a scale-recurrent network after
      Tao et al.), run coarse to fine: scale i sees [blur_i, up(I_{i+1})] (the coarsest sees
      blur_k twice) and returns the latent sharp image I_i and its scale features.
  GN, Section 3.3.2: a U-Net of the same blocks on the blurry gradient map M(X_b); after each EBlock
      it concatenates SN's scale features of that resolution; its decoder returns the gradient map
      X^_g = G_gb(X_b) and the gradient features grad_f.
  Fusion: [grad_f, SN's finest scale features] -> the restored image X^_b = G(X_b).
Discriminator D, Section 3.4 / Table 1: strided 3x3 convolutions with LeakyReLU(0.2), no pooling.

Blocks, Section 3.3.1 and 3.3.3: InBlock / EBlock = conv3x3 (stride 1 / 2) + ReLU + 4 ResBlocks;
DBlock = 4 ResBlocks + deconv (x2) + ReLU; OutBlock = 4 ResBlocks + a stride-1 layer to the image.
ResBlocks are linked in nested pairs, eq. (9). Every kernel is 3x3 (the paper's choice "considering
the training cost and the parameter number"), deconvolutions included; widths are features x
(1, 2, 4) = 64, 128, 256 (the paper gives no widths; these give its "more than 29 million"
parameters, which the SRN widths 32/64/128 would miss by a factor of 4).

Parameter count with the defaults (channels 3): G 26.75M + D 4.77M = 31.52M (paper, Section 6:
"more than 29 million"; tests/test_baselines.py checks it).

Training constants (Section 5.1) are exported for the trainer: Adam (0.9, 0.999, 1e-8), learning
rates 1e-4 (G) and 4e-4 (D), gradient clipping at 2.

Any image size: the input is padded (symmetric, bottom/right) to a multiple of 4 x 2^(scales-1), so
that each scale's two stride-2 levels and the x0.5 pyramid are exact, and every output is cropped
to ceil(H / 2^s) x ceil(W / 2^s) at scale s (the full size at s = 0): `unroll.multiscale`'s helpers,
shared with IDC and MTWDN and with their losses (which also take the gradient map M from there).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx, struct

from unroll.models.blocks import (
    Keys,
    ResBlocks,
    as_keys,
    check_sizes,
    conv,
    deconv,
    lecun_normal,
    strided_conv,
)
from unroll.multiscale import coarse_to_fine, crop, crop_scales, gradient_map, pad_to_multiple

MADN_GENERATOR_LR = 1e-4
MADN_DISCRIMINATOR_LR = 4e-4
# Section 5.1: "gradient clipping ... setting the minimum value to 1e-5 and the maximum value to 2".
# Clipping gradient *values* to [1e-5, 2] would turn every negative gradient into a positive one, so
# we read the maximum as the clipping threshold (e.g. optax.clip(MADN_GRADIENT_CLIP), TensorFlow's
# clip_by_value to [-2, 2]); the "minimum" has no sensible meaning and is not used.
MADN_GRADIENT_CLIP = 2.0
MADN_ADAM = dict(b1=0.9, b2=0.999, eps=1e-8)  # Section 4.3

RESBLOCKS = 4            # per InBlock / EBlock / DBlock / OutBlock (Section 3.3.1)
LEAKY_SLOPE = 0.2        # discriminator activations (Section 3.4)
# He initialisation for the discriminator's 14 LeakyReLU layers: with LeCun's variance the signal
# halves at every layer and an untrained D returns logits ~1e-5 whatever its input.
LEAKY_GAIN = math.sqrt(2 / (1 + LEAKY_SLOPE ** 2))
RESIZE_METHOD = "cubic"  # Section 4.1: bicubic interpolation whenever the image size changes


class NestedResBlocks(ResBlocks):
    """`count` ResBlocks linked in nested pairs, eq. (9):
    P_{n+3} = P_n + R1(P_n) + R2(P_n + R1(P_n)),
    with R the residual branch of Fig. 4(b) (conv3x3, ReLU, conv3x3; no batch norm, no final ReLU).
    Written Q = P_n + R1(P_n), eq. (9) is P_{n+3} = Q + R2(Q): two residual blocks in sequence,
    which is how it is computed (`blocks.ResBlocks`). An odd last ResBlock gets its plain residual
    connection."""

    def __init__(self, features: int, count: int = RESBLOCKS, *, rngs: nnx.Rngs | Keys):
        super().__init__(features, count, 3, rngs=rngs)


class InBlock(nnx.Module):
    """conv3x3 (stride 1) + ReLU + ResBlocks; EBlock is the same with stride 2."""

    def __init__(self, in_features: int, features: int, resblocks: int = RESBLOCKS,
                 stride: int = 1, *, rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        self.conv = strided_conv(in_features, features, 3, stride, rngs=rngs)
        self.resblocks = NestedResBlocks(features, resblocks, rngs=rngs)

    def __call__(self, x):
        return self.resblocks(jax.nn.relu(self.conv(x)))


class EBlock(InBlock):
    """conv3x3 with stride 2 (the encoder's down-sampling) + ReLU + ResBlocks."""

    def __init__(self, in_features: int, features: int, resblocks: int = RESBLOCKS, *,
                 rngs: nnx.Rngs | Keys):
        super().__init__(in_features, features, resblocks, stride=2, rngs=rngs)


class DBlock(nnx.Module):
    """ResBlocks + 3x3 deconvolution with stride 2 (the decoder's up-sampling) + ReLU."""

    def __init__(self, features: int, out_features: int, resblocks: int = RESBLOCKS, *,
                 rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        self.resblocks = NestedResBlocks(features, resblocks, rngs=rngs)
        self.deconv = deconv(features, out_features, 3, 2, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.deconv(self.resblocks(x)))


class OutBlock(nnx.Module):
    """ResBlocks + the block's last layer to `out_features` channels; returns (output, features).

    The paper's stride-1 "deconvolution" is a convolution with a flipped kernel (same function
    class and parameter count), so a 3x3 convolution is used. The features before it are the
    "scale features" (SN) and "gradient features" (GN) handed to the other networks.
    """

    def __init__(self, features: int, out_features: int, resblocks: int = RESBLOCKS, *,
                 rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        self.resblocks = NestedResBlocks(features, resblocks, rngs=rngs)
        self.conv = conv(features, out_features, 3, rngs=rngs)

    def __call__(self, x):
        features = self.resblocks(x)
        return self.conv(features), features


# --- Generator ----------------------------------------------------------------------------------

class SN(nnx.Module):
    """Scale network, Section 3.3.1: InBlock, 2 EBlocks, 2 DBlocks, OutBlock, one scale.

    Encoder-decoder skips are additive, as in the scale-recurrent network the paper builds on.
    Input [blur_i, up(I_{i+1})] (2C channels); returns (I_i, scale features of width `features`).
    """

    def __init__(self, channels: int, features: int, resblocks: int = RESBLOCKS, *,
                 rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        f = features
        self.inblock = InBlock(2 * channels, f, resblocks, rngs=rngs)
        self.eblock1 = EBlock(f, 2 * f, resblocks, rngs=rngs)
        self.eblock2 = EBlock(2 * f, 4 * f, resblocks, rngs=rngs)
        self.dblock1 = DBlock(4 * f, 2 * f, resblocks, rngs=rngs)
        self.dblock2 = DBlock(2 * f, f, resblocks, rngs=rngs)
        self.outblock = OutBlock(f, channels, resblocks, rngs=rngs)

    def __call__(self, x):
        e1 = self.inblock(x)
        e2 = self.eblock1(e1)
        e3 = self.eblock2(e2)
        d2 = self.dblock1(e3) + e2
        d1 = self.dblock2(d2) + e1
        return self.outblock(d1)


class GN(nnx.Module):
    """Gradient network, Section 3.3.2: a U-Net of SN's blocks on the blurry gradient map M(X_b).

    After EBlock j (resolution 1/2^j, j = 1, 2) it concatenates SN's scale features of the same
    resolution (SN scale j + 1, when there is one) and fuses them back to the EBlock's width with a
    1x1 convolution (the paper says "concat layer" and nothing about widths).
    Returns (reconstructed gradient map X^_g, gradient features grad_f).
    """

    def __init__(self, channels: int, features: int, scales: int, resblocks: int = RESBLOCKS, *,
                 rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        f = features
        self.inblock = InBlock(channels, f, resblocks, rngs=rngs)
        self.eblock1 = EBlock(f, 2 * f, resblocks, rngs=rngs)
        self.eblock2 = EBlock(2 * f, 4 * f, resblocks, rngs=rngs)
        # One "concat layer" per EBlock that has an SN scale at its resolution.
        self.concats = nnx.List([conv(w + f, w, 1, rngs=rngs)
                                 for w in (2 * f, 4 * f)[:max(0, scales - 1)]])
        self.dblock1 = DBlock(4 * f, 2 * f, resblocks, rngs=rngs)
        self.dblock2 = DBlock(2 * f, f, resblocks, rngs=rngs)
        self.outblock = OutBlock(f, channels, resblocks, rngs=rngs)

    def __call__(self, gradient, scale_features):
        """`scale_features`: SN's features per scale, finest first (resolutions 1, 1/2, ...)."""
        e1 = self.inblock(gradient)
        e2 = self._concat(0, self.eblock1(e1), scale_features)
        e3 = self._concat(1, self.eblock2(e2), scale_features)
        d2 = self.dblock1(e3) + e2
        d1 = self.dblock2(d2) + e1
        return self.outblock(d1)

    def _concat(self, j, x, scale_features):
        if j >= len(self.concats):
            return x
        return self.concats[j](jnp.concatenate([x, scale_features[j + 1]], axis=-1))


class Fusion(nnx.Module):
    """[gradient features, SN's finest scale features] -> the restored image (Section 3.3.2: "the
    gradient features are combined with the multi-scale features, and then input to the up-sampling
    block"): conv3x3 + ReLU merging both, ResBlocks, and the final 1x1 convolution of Section 3.3.1
    ("to achieve the fusion of features obtained from different channels"). At full resolution
    already, this block does not change the size."""

    def __init__(self, channels: int, features: int, resblocks: int = RESBLOCKS, *,
                 rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        self.conv = conv(2 * features, features, 3, rngs=rngs)
        self.resblocks = NestedResBlocks(features, resblocks, rngs=rngs)
        self.out = conv(features, channels, 1, rngs=rngs)

    def __call__(self, gradient_features, scale_features):
        x = jax.nn.relu(self.conv(jnp.concatenate([gradient_features, scale_features], axis=-1)))
        return self.out(self.resblocks(x))


# --- Discriminator ------------------------------------------------------------------------------

class Discriminator(nnx.Module):
    """Table 1, widths features x (1, 1, 2, 4, 8) = 64, 64, 128, 256, 512 for features = 64.

    Conv_1..10: 3x3 convolutions in pairs, the second of each pair with stride 2 (the table's
    "stride 2" per pair of layers; stride 2 on all ten would shrink a 256x256 crop below one
    pixel; this is the SRGAN discriminator's pattern). Conv_11, 12: 1x1 stride-1 convolutions
    compressing the channels to 1 (Section 3.4: "two dimensionally invariant 1x1 convolutions").
    Dense_1 (1024 = 16 x features units, "3x3" in Table 1) is applied as a 3x3 convolution at every
    position and averaged over the image, which keeps D independent of the image size (a flattening
    dense layer would fix it); Dense_2 gives one logit. LeakyReLU(0.2) after every layer but the
    last.

    Returns LOGITS `[N]`. The paper's sigmoid output D = sigmoid(logit) is applied inside the losses
    through log_sigmoid (numerically stable for confident discriminators).
    """

    def __init__(self, channels: int = 3, features: int = 64, *, rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        widths = [features * m for m in (1, 1, 2, 4, 8)]
        layers, c = [], channels
        for w in widths:
            layers += [strided_conv(c, w, 3, 1, gain=LEAKY_GAIN, rngs=rngs),
                       strided_conv(w, w, 3, 2, gain=LEAKY_GAIN, rngs=rngs)]
            c = w
        layers += [conv(c, 1, 1, gain=LEAKY_GAIN, rngs=rngs),
                   conv(1, 1, 1, gain=LEAKY_GAIN, rngs=rngs)]
        self.convs = nnx.List(layers)
        self.dense1 = conv(1, 16 * features, 3, gain=LEAKY_GAIN, rngs=rngs)
        self.dense2 = nnx.Linear(16 * features, 1, kernel_init=lecun_normal, rngs=rngs)

    def __call__(self, x):
        for layer in self.convs:
            x = jax.nn.leaky_relu(layer(x), LEAKY_SLOPE)
        x = jax.nn.leaky_relu(self.dense1(x), LEAKY_SLOPE)
        return self.dense2(jnp.mean(x, axis=(1, 2)))[:, 0]


# --- MADN ---------------------------------------------------------------------------------------

@struct.dataclass
class MADNOutput:
    """images: (I_k, ..., I_2, I_1, X^_b), coarse to fine: SN's latent sharp image of every scale
    (eq. 12) and then G's restored image (the network's output, full resolution, eqs. 13, 15);
    gradients: (X^_g,), GN's reconstructed gradient map (eqs. 13, 16, 20), full resolution."""

    images: tuple
    gradients: tuple


class MADN(nnx.Module):
    """MADN generator (SN, GN, Fusion) and its discriminator in one module.

    `model(g)` runs the generator only and returns a `MADNOutput`. `model.discriminator` (the only
    discriminator parameters, so a trainer can split on that attribute) maps images or gradient
    maps `[N, H, W, C]` to logits `[N]`; `fake_logits(output)` and `real_logits(sharp)` give the
    (image, gradient-map) pairs that the losses' adversarial terms (eqs. 14-16, 18-20) take.

    Defaults are the paper's: 3 scales, features 64 (64/128/256), 4 ResBlocks per block, about
    26.75M generator + 4.77M discriminator parameters (paper: "more than 29 million").
    `resblocks` (linked in pairs by eq. 9; an odd last one gets a plain residual) is there for tiny
    test networks.
    """

    def __init__(self, channels: int = 3, features: int = 64, scales: int = 3, *,
                 resblocks: int = RESBLOCKS, rngs: nnx.Rngs | None = None):
        check_sizes(channels, features, scales, resblocks)
        rngs = as_keys(nnx.Rngs(0) if rngs is None else rngs)
        self.channels = channels
        self.scales = scales
        self.sn = SN(channels, features, resblocks, rngs=rngs)
        self.gn = GN(channels, features, scales, resblocks, rngs=rngs)
        self.fusion = Fusion(channels, features, resblocks, rngs=rngs)
        self.discriminator = Discriminator(channels, features, rngs=rngs)

    @property
    def multiple(self) -> int:
        """Input sizes are padded to this: two stride-2 levels at the coarsest scale."""
        return 4 * 2 ** (self.scales - 1)

    def __call__(self, g) -> MADNOutput:
        if g.ndim != 4 or g.shape[-1] != self.channels:
            raise ValueError(f"expected images [N, H, W, {self.channels}], got {g.shape}")
        H, W = g.shape[1:3]
        x = pad_to_multiple(g, self.multiple)
        # SN at every scale, coarse to fine, shared weights: (I_i, scale features) per scale.
        latents, features = zip(*coarse_to_fine(self.sn, x, self.scales, RESIZE_METHOD,
                                                image=lambda out: out[0]))
        features = features[::-1]  # finest first
        gradient, gradient_features = self.gn(gradient_map(x), features)
        restored = self.fusion(gradient_features, features[0])
        images = crop_scales(latents, H, W) + (crop(restored, H, W),)
        return MADNOutput(images=images, gradients=(crop(gradient, H, W),))

    def fake_logits(self, output: MADNOutput):
        """(D(X^_b), D(X^_g)): D on the restored image and on the reconstructed gradient map."""
        return self._judge(output.images[-1], output.gradients[-1])

    def real_logits(self, sharp):
        """(D(X_t), D(M(X_t))): D on the sharp image and on its gradient map."""
        return self._judge(sharp, gradient_map(sharp))

    def _judge(self, images, gradients):
        # One call on both batches (D has no batch statistics): half the graph to compile.
        logits = self.discriminator(jnp.concatenate([images, gradients], axis=0))
        return logits[:images.shape[0]], logits[images.shape[0]:]


def generator_parameters(model: MADN) -> int:
    return _count(nnx.state(model, nnx.Param)) - discriminator_parameters(model)


def discriminator_parameters(model: MADN) -> int:
    return _count(nnx.state(model.discriminator, nnx.Param))


def _count(state) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(state))
