"""IDC: iterative dual CNNs for image deblurring (Wang et al., paper Section 3) as Flax NNX modules.

One network, applied to every scale of the blurred image pyramid with the same weights, coarse to
fine (Section 3.2, "multiscale iterative strategy": more receptive field "without changing the
network structure or parameters"). At scale i its input is [y_i, up(x^_{i+1})], the blurred image
and the upsampled result of the coarser scale (the coarsest scale sees y_k twice), as in the
scale-iterative networks the paper cites (Nah et al., Tao et al.); its Fig. 4 says no more.

  SubDeblur (U-Net): EBlocks E1, E2, E3 (widths f, 2f, 4f; E2, E3 halve the size) and DBlocks
      D1, D2 (x2 up-sampling) and D3 (stride 1); encoder features are added to the decoder's at
      equal resolution (the paper's Fig. 3 skips; added rather than concatenated, as in Tao et al.,
      whose 5x5 / 4x4 / 32-64-128 layout Table 1 reproduces).
  SubTexture: two stride-1 EBlocks of width 2f (64), no down-sampling.
  Fusion: [SubDeblur features, SubTexture features] -> conv5x5 (f) + ReLU -> conv5x5 (C).

Blocks (Section 3.1, Table 1): ResBlock = x + conv5x5(ReLU(conv5x5(x))) (Section 3.1: "two
convolution layers and activation functions, and the convolution layers are in skip connection";
`blocks.ResBlock` with 5x5 kernels); EBlock = conv5x5 (stride 1 or 2) + ReLU + 2 ResBlocks;
DBlock = 2 ResBlocks + deconv4x4 (stride 2, or 1 for D3) + ReLU (Table 1 lists each DBlock's
deconvolution first; the text's "two ResBlock modules and one deconvolution layer" and the U-Net's
skips at the up-sampled resolution fix the order used here).

Table 1's widths (32/64/128, SubTexture 64) are features x (1, 2, 4) and 2 x features; with the
defaults (features 32, RGB) the network has 5.76M parameters (the paper gives no count). Weights:
truncated LeCun normal (the paper's Xavier has the same variance for equal input/output widths).
Any image size: padded to a multiple of 4 x 2^(scales-1) and cropped back (`unroll.multiscale`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from unroll.models.blocks import Keys, ResBlock, as_keys, check_sizes, conv, deconv, strided_conv
from unroll.multiscale import coarse_to_fine, crop_scales, pad_to_multiple

KERNEL = 5            # Table 1: every convolution and ResBlock is 5x5
DECONV_KERNEL = 4     # Table 1: deconvolutions are 4x4
RESBLOCKS = 2         # Section 3.1: two ResBlocks per EBlock and DBlock
RESIZE_METHOD = "linear"  # the paper does not say; bilinear, as in Tao et al.'s scale pyramid


class EBlock(nnx.Module):
    """conv5x5 (stride 1 or 2) + ReLU + ResBlocks."""

    def __init__(self, in_features: int, features: int, stride: int = 1,
                 resblocks: int = RESBLOCKS, *, rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        self.conv = strided_conv(in_features, features, KERNEL, stride, rngs=rngs)
        self.resblocks = nnx.List([ResBlock(features, KERNEL, rngs=rngs)
                                   for _ in range(resblocks)])

    def __call__(self, x):
        x = jax.nn.relu(self.conv(x))
        for block in self.resblocks:
            x = block(x)
        return x


class DBlock(nnx.Module):
    """ResBlocks + deconv4x4 (stride 2 or 1) + ReLU."""

    def __init__(self, features: int, out_features: int, stride: int = 2,
                 resblocks: int = RESBLOCKS, *, rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        self.resblocks = nnx.List([ResBlock(features, KERNEL, rngs=rngs)
                                   for _ in range(resblocks)])
        self.deconv = deconv(features, out_features, DECONV_KERNEL, stride, rngs=rngs)

    def __call__(self, x):
        for block in self.resblocks:
            x = block(x)
        return jax.nn.relu(self.deconv(x))


class SubDeblur(nnx.Module):
    """The deblurring sub-network: a three-level U-Net (E1, E2, E3 / D1, D2, D3) -> features f."""

    def __init__(self, in_features: int, features: int, resblocks: int = RESBLOCKS, *,
                 rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        f = features
        self.e1 = EBlock(in_features, f, 1, resblocks, rngs=rngs)
        self.e2 = EBlock(f, 2 * f, 2, resblocks, rngs=rngs)
        self.e3 = EBlock(2 * f, 4 * f, 2, resblocks, rngs=rngs)
        self.d1 = DBlock(4 * f, 2 * f, 2, resblocks, rngs=rngs)
        self.d2 = DBlock(2 * f, f, 2, resblocks, rngs=rngs)
        self.d3 = DBlock(f, f, 1, resblocks, rngs=rngs)

    def __call__(self, x):
        e1 = self.e1(x)
        e2 = self.e2(e1)
        e3 = self.e3(e2)
        d = self.d1(e3) + e2
        d = self.d2(d) + e1
        return self.d3(d)


class SubTexture(nnx.Module):
    """The detail recovery sub-network: two stride-1 EBlocks (shallow, wide, no down-sampling)."""

    def __init__(self, in_features: int, features: int, resblocks: int = RESBLOCKS, *,
                 rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        self.e1 = EBlock(in_features, features, 1, resblocks, rngs=rngs)
        self.e2 = EBlock(features, features, 1, resblocks, rngs=rngs)

    def __call__(self, x):
        return self.e2(self.e1(x))


class Fusion(nnx.Module):
    """Table 1's fusion module on both sub-networks' features: conv5x5 (-> f) + ReLU, conv5x5
    (-> C)."""

    def __init__(self, in_features: int, features: int, channels: int, *, rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        self.conv1 = conv(in_features, features, KERNEL, rngs=rngs)
        self.conv2 = conv(features, channels, KERNEL, rngs=rngs)

    def __call__(self, deblur, texture):
        x = jax.nn.relu(self.conv1(jnp.concatenate([deblur, texture], axis=-1)))
        return self.conv2(x)


@struct.dataclass
class IDCOutput:
    """images: the restored image of every scale, coarse to fine (scale s has size
    ceil(H / 2^s) x ceil(W / 2^s)); the last is the network's full-resolution output."""

    images: tuple


class IDC(nnx.Module):
    """Iterative dual CNNs. `IDC(channels, features=32, scales=3)`; `model(g)` -> `IDCOutput`.

    `resblocks` (2 in the paper) is there for tiny test networks.
    """

    def __init__(self, channels: int = 3, features: int = 32, scales: int = 3, *,
                 resblocks: int = RESBLOCKS, rngs: nnx.Rngs | None = None):
        check_sizes(channels, features, scales, resblocks)
        rngs = as_keys(nnx.Rngs(0) if rngs is None else rngs)
        self.channels = channels
        self.scales = scales
        self.sub_deblur = SubDeblur(2 * channels, features, resblocks, rngs=rngs)
        self.sub_texture = SubTexture(2 * channels, 2 * features, resblocks, rngs=rngs)
        self.fusion = Fusion(3 * features, features, channels, rngs=rngs)

    @property
    def multiple(self) -> int:
        return 4 * 2 ** (self.scales - 1)

    def step(self, x):
        """One scale: [y_i, up(x^_{i+1})] -> x^_i."""
        return self.fusion(self.sub_deblur(x), self.sub_texture(x))

    def __call__(self, g) -> IDCOutput:
        if g.ndim != 4 or g.shape[-1] != self.channels:
            raise ValueError(f"expected images [N, H, W, {self.channels}], got {g.shape}")
        H, W = g.shape[1:3]
        images = coarse_to_fine(self.step, pad_to_multiple(g, self.multiple), self.scales,
                                RESIZE_METHOD)
        return IDCOutput(images=crop_scales(images, H, W))
