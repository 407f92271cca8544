"""MTWDN: multi-scale two-way deblurring network (Cheng et al., paper Section 3), Flax NNX modules.

Eq. (1): I^i, I^i_up, I^i_down = Net(B^i, I^{i+1}; theta), I^i = I^i_up + I^i_down, one set of
parameters theta for every scale, run coarse to fine; scale i's input is [B^i, up(I^{i+1})] (the
coarsest scale sees B^k twice, as in Tao et al.'s scale-recurrent network, which the paper extends).

Net (Section 3.1, Fig. 1): an encoder of InBlock + 2 EBlocks (a convolution and three residual
blocks each; widths f, 2f, 4f, the EBlocks halving the size) and two decoders of the same shape:
  up:   DBlocks (a deconvolution and three residual blocks) that add the encoder's feature maps at
        equal resolution ("inherits the feature map of the encoder"): the image content;
  down: the same DBlocks without any skip connection ("restored from blank image"): the rest.
Each decoder ends with a 3x3 convolution to the image's channels (OutBlock).

The paper sets every convolution to 3x3; it gives neither widths nor the deconvolutions' kernels,
so the widths are Tao et al.'s 32/64/128 (features x 1, 2, 4) and the stride-2 deconvolutions are
4x4 as there. ResBlock = x + conv3x3(ReLU(conv3x3(x))) (`blocks.ResBlock`). With the defaults
(features 32, RGB) the network has 2.14M parameters (the paper gives no count). Weights:
truncated LeCun normal (the paper's Xavier has the same variance for equal input/output widths).
Any image size: padded to a multiple of 4 x 2^(scales-1) and cropped back (`unroll.multiscale`).
"""

from __future__ import annotations

import jax
from flax import nnx, struct

from unroll.models.blocks import Keys, ResBlocks, as_keys, check_sizes, conv, deconv, strided_conv
from unroll.multiscale import coarse_to_fine, crop_scales, pad_to_multiple

KERNEL = 3             # Section 4: "We set the convolution kernel size 3x3"
DECONV_KERNEL = 4      # not given; Tao et al.'s
RESBLOCKS = 3          # Section 3.1: three residual blocks per encoder / decoder level
RESIZE_METHOD = "linear"  # not given; bilinear as in Tao et al.


class EBlock(nnx.Module):
    """conv3x3 (stride 1 for the InBlock, 2 for an EBlock) + ReLU + ResBlocks."""

    def __init__(self, in_features: int, features: int, stride: int, resblocks: int = RESBLOCKS,
                 *, rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        self.conv = strided_conv(in_features, features, KERNEL, stride, rngs=rngs)
        self.resblocks = ResBlocks(features, resblocks, KERNEL, rngs=rngs)

    def __call__(self, x):
        return self.resblocks(jax.nn.relu(self.conv(x)))


class DBlock(nnx.Module):
    """deconv4x4 (x2) + ReLU, [+ the encoder's skip], ResBlocks."""

    def __init__(self, in_features: int, features: int, resblocks: int = RESBLOCKS, *,
                 rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        self.deconv = deconv(in_features, features, DECONV_KERNEL, 2, rngs=rngs)
        self.resblocks = ResBlocks(features, resblocks, KERNEL, rngs=rngs)

    def __call__(self, x, skip=None):
        x = jax.nn.relu(self.deconv(x))
        return self.resblocks(x if skip is None else x + skip)


class Decoder(nnx.Module):
    """Two DBlocks (4f -> 2f -> f) and the OutBlock's conv3x3 to the image; with `skips` it is the
    up branch, without them the down branch."""

    def __init__(self, features: int, channels: int, resblocks: int = RESBLOCKS, *,
                 rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        f = features
        self.dblock1 = DBlock(4 * f, 2 * f, resblocks, rngs=rngs)
        self.dblock2 = DBlock(2 * f, f, resblocks, rngs=rngs)
        self.out = conv(f, channels, KERNEL, rngs=rngs)

    def __call__(self, x, skips=(None, None)):
        x = self.dblock1(x, skips[0])
        x = self.dblock2(x, skips[1])
        return self.out(x)


class Net(nnx.Module):
    """Eq. (1) at one scale: [B^i, up(I^{i+1})] -> (I^i, I^i_up, I^i_down)."""

    def __init__(self, channels: int, features: int, resblocks: int = RESBLOCKS, *,
                 rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        f = features
        self.inblock = EBlock(2 * channels, f, 1, resblocks, rngs=rngs)
        self.eblock1 = EBlock(f, 2 * f, 2, resblocks, rngs=rngs)
        self.eblock2 = EBlock(2 * f, 4 * f, 2, resblocks, rngs=rngs)
        self.up = Decoder(f, channels, resblocks, rngs=rngs)
        self.down = Decoder(f, channels, resblocks, rngs=rngs)

    def __call__(self, x):
        e1 = self.inblock(x)
        e2 = self.eblock1(e1)
        e3 = self.eblock2(e2)
        up = self.up(e3, (e2, e1))
        down = self.down(e3)
        return up + down, up, down


@struct.dataclass
class MTWDNOutput:
    """Per scale, coarse to fine (scale s has size ceil(H / 2^s) x ceil(W / 2^s)):
    images: I^i = I^i_up + I^i_down (the last is the network's output); up_images: I^i_up (image
    content, from the decoder with skips); down_images: I^i_down (the remainder, without skips)."""

    images: tuple
    up_images: tuple
    down_images: tuple


class MTWDN(nnx.Module):
    """Multi-scale two-way deblurring network. `MTWDN(channels, features=32, scales=3)`;
    `model(g)` -> `MTWDNOutput`. `resblocks` (3 in the paper) is there for tiny test networks."""

    def __init__(self, channels: int = 3, features: int = 32, scales: int = 3, *,
                 resblocks: int = RESBLOCKS, rngs: nnx.Rngs | None = None):
        check_sizes(channels, features, scales, resblocks)
        rngs = as_keys(nnx.Rngs(0) if rngs is None else rngs)
        self.channels = channels
        self.scales = scales
        self.net = Net(channels, features, resblocks, rngs=rngs)

    @property
    def multiple(self) -> int:
        return 4 * 2 ** (self.scales - 1)

    def __call__(self, g) -> MTWDNOutput:
        if g.ndim != 4 or g.shape[-1] != self.channels:
            raise ValueError(f"expected images [N, H, W, {self.channels}], got {g.shape}")
        H, W = g.shape[1:3]
        results = coarse_to_fine(self.net, pad_to_multiple(g, self.multiple), self.scales,
                                 RESIZE_METHOD, image=lambda out: out[0])
        images, ups, downs = (crop_scales(seq, H, W) for seq in zip(*results))
        return MTWDNOutput(images=images, up_images=ups, down_images=downs)
