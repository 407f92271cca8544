"""Shared Flax NNX blocks: convolutions, RCAB, bilinear resampling and a multi-scale encoder-decoder
(MGSTNet's prior extractors, paper Section II-B, Fig. 1(c), (e), (f)); strided and transposed
convolutions and residual blocks (the CNN baselines MADN, IDC, MTWDN). Feature maps are NHWC.
All convolutions use zero 'SAME' padding, truncated LeCun-normal weights (Flax's default
distribution) and zero biases.

Initialisation cost. Networks of a few hundred convolutions are slow to create with the stock tools
on CPU, for two reasons measured with flax 0.12.8 / jax 0.10.2:
  * every `nnx.Rngs` draw updates its counter Variable, and under a trace (`nnx.eval_shape`,
    `jax.jit`) each update builds a tracer error message that scans the whole jaxpr, so abstract
    initialisation is quadratic in the number of layers (38 s for the 15M-parameter MGSTNet);
  * eager `jax.random` compiles one XLA program per distinct parameter shape (0.5-5 s each here,
    45 s for the first tiny MGSTNet).
So blocks draw keys from `Keys` (one draw from the caller's `nnx.Rngs`, then `fold_in` with a Python
counter; `nnx.Conv` only calls `rngs.params()`, which `Keys` provides) and `lecun_normal` draws from
a buffer whose size is rounded up to a power of two (one compiled program per size bucket). Both are
deterministic given the `nnx.Rngs` seed. Together: abstract init of the paper model 38 s -> 2 s,
eager init of a tiny one 45 s -> 3 s.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# RCAN's channel-attention reduction ratio. Narrow features keep at least one hidden channel
# (the kernel prior's 32 features give 2; the tiny test widths give 1).
REDUCTION = 16

_MIN_DRAW = 4096
# Standard deviation of a standard normal truncated to [-2, 2]; dividing by it restores unit variance.
_TRUNCATED_STD = 0.87962566103423978


class Keys:
    """A stream of PRNG keys for parameter initialisation: `keys.params()` (the method `nnx.Conv`
    calls on its `rngs`) returns `fold_in(key, i)` for i = 1, 2, ...

    Build it from an `nnx.Rngs` with `as_keys`; blocks accept either.
    """

    def __init__(self, key: jax.Array):
        self.key = key
        self.count = 0

    def params(self) -> jax.Array:
        self.count += 1
        return jax.random.fold_in(self.key, self.count)

    __call__ = params


def as_keys(rngs: nnx.Rngs | Keys) -> Keys:
    """`rngs` itself if it is a `Keys`, else a `Keys` seeded by one draw from the `nnx.Rngs`."""
    return rngs if isinstance(rngs, Keys) else Keys(rngs.params())


@functools.partial(jax.jit, static_argnums=1)
def _truncated_normal(key, size: int):
    return jax.random.truncated_normal(key, -2.0, 2.0, (size,), jnp.float32)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _take(z, shape: tuple[int, ...], scale: float):
    return z[:math.prod(shape)].reshape(shape) * scale


def lecun_normal(key, shape, dtype=jnp.float32, gain: float = 1.0):
    """Truncated normal with variance gain^2 / fan_in (fan_in = all but the last axis, as HWIO)."""
    shape = tuple(int(d) for d in shape)
    n, fan_in = math.prod(shape), math.prod(shape[:-1])
    size = max(_MIN_DRAW, 1 << (n - 1).bit_length())
    scale = gain / (math.sqrt(fan_in) * _TRUNCATED_STD)
    return _take(_truncated_normal(key, size), shape, scale).astype(dtype)


def conv(in_features: int, out_features: int, kernel_size: int = 3, *, gain: float = 1.0,
         rngs: nnx.Rngs | Keys) -> nnx.Conv:
    """A square 'SAME' convolution with bias; `gain` scales the initial weights."""
    init = lecun_normal if gain == 1.0 else functools.partial(lecun_normal, gain=gain)
    return nnx.Conv(in_features, out_features, (kernel_size, kernel_size), padding="SAME",
                    kernel_init=init, conv_general_dilated=conv_general_dilated,
                    rngs=as_keys(rngs))


# Convolution with gradients written as plain NHWC x HWIO convolutions.
#
# JAX differentiates a convolution into convolutions with other dimension labels (the input gradient
# takes the kernel as 01oi, the kernel gradient is a b01f x b01f correlation). Unrolled, XLA:CPU
# transposes their operands so that its fast convolution applies; inside a `while` loop it does
# not, and falls back to a generic loop nest: the demo train step, a scan over the stages, takes
# 3.6 s instead of 0.3 s (benchmarks.train_step --conv_grad=xla). Here the two gradients are
# computed as forward convolutions of explicitly transposed operands, which XLA keeps in its fast
# path everywhere, and 1x1 convolutions are dots. See the README's benchmarks section for what
# is still slower than PyTorch (the weight gradient).
#
# A custom_vjp has no forward mode: jax.jvp / linearize / jacfwd of a network need JAX's own rules,
# switched on at trace time by `forward_mode_convolutions()` (unroll.studies does this itself).

_FORWARD_MODE = contextvars.ContextVar("unroll_forward_mode_convolutions", default=False)


@contextlib.contextmanager
def forward_mode_convolutions():
    """Trace convolutions with JAX's own differentiation rules, which support forward mode
    (`jax.jvp`, `jax.linearize`, `jax.jacfwd`); reverse mode inside loops is then slower on CPU."""
    token = _FORWARD_MODE.set(True)
    try:
        yield
    finally:
        _FORWARD_MODE.reset(token)

_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv(x, w, padding, precision=None, preferred_element_type=None):
    return jax.lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=_NHWC,
                                        precision=precision,
                                        preferred_element_type=preferred_element_type)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _plain_conv(x, w, padding, precision, preferred_element_type):
    return _conv(x, w, padding, precision, preferred_element_type)


def _plain_conv_fwd(x, w, padding, precision, preferred_element_type):
    # x is kept channels-first, [C, H, (W, N)], the layout the weight gradient reads: transposed here,
    # next to its producer, rather than in the backward pass after a dynamic slice of the stage
    # scan's stacked residuals, where XLA:CPU ran the transpose several times slower. XLA fuses the
    # transpose into x's producer (a bias add, a ReLU). With one image it is written as the 2-D
    # transpose [H W, C] -> [C, H W] it is: as (3, 1, 2, 0) of [1, H, W, C], with its unit axis,
    # XLA:CPU emitted a slower copy (paper train step, stages unrolled, benchmarks.train_step
    # alternating: 5.24 / 5.26 -> 4.86 / 4.96 s, close to this machine's run-to-run noise).
    n, h, wd, c = x.shape
    if n == 1:
        xt = x.reshape(h * wd, c).T.reshape(c, h, wd)
    else:
        xt = jnp.transpose(x, (3, 1, 2, 0)).reshape(c, h, wd * n)
    return _conv(x, w, padding, precision, preferred_element_type), (xt, w)


def _plain_conv_bwd(padding, precision, preferred_element_type, residuals, dy):
    xt, w = residuals
    (top, bottom), (left, right) = padding
    kh, kw = w.shape[:2]
    dy = dy.astype(xt.dtype)
    # dx: dy correlated with the flipped kernel, input and output channels swapped.
    flipped = jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))
    dx = _conv(dy, flipped, ((kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right)),
               precision)
    return dx.astype(xt.dtype), _weight_gradient(xt, dy, padding, kw, precision).astype(w.dtype)


def _weight_gradient(xt, dy, padding, kw, precision):
    """dw[a, b, i, o] = sum_{n,p,q} x_pad[n, p + a, q + b, i] dy[n, p, q, o], for x channels-first
    (xt: [C, H, (W, N)]) and dy [N, H', W', O], as one 1-D convolution over the rows.

    Rows are the spatial axis (x's row padding is the convolution's, window H', kh output taps),
    (column, image) the contracted features, x's channels the batch. The column shift b cannot be
    a spatial offset here, so dy is stacked kw times along its output features, the copy for b
    shifted by b columns (zero-filled): dy_b[p, j, o] = dy[p, j + left - b, o], so that
    sum_j x[i, p + a, j] dy_b[p, j, o] is tap (a, b) without ever padding x's columns. One GEMM-
    shaped contraction of H' x W x N into [C, kh, kw O]. It replaced x padded and stacked kw times,
    which inside the stage scan was a slow copy out of the stacked residuals (paper train step,
    alternating runs of benchmarks.train_step: 5.33 / 5.75 -> 5.19 / 5.38 s).
    """
    c, _, wn = xt.shape
    n, h_out, w_out, o = dy.shape
    wd = wn // n
    (top, bottom), (left, _) = padding
    dyt = jnp.transpose(dy, (1, 2, 0, 3))  # [H', W', N, O]
    zero = jnp.zeros((), dy.dtype)
    rhs = jnp.stack([jax.lax.pad(dyt, zero, ((0, 0, 0), (b - left, wd - w_out - b + left, 0),
                                             (0, 0, 0), (0, 0, 0)))
                     for b in range(kw)], axis=3).reshape(h_out, wd * n, kw * o)
    dw = jax.lax.conv_general_dilated(xt, rhs, (1,), [(top, bottom)], precision=precision,
                                      dimension_numbers=("NHC", "HIO", "NHC"))  # [C, kh, kw O]
    return jnp.transpose(dw.reshape(c, dw.shape[1], kw, o), (1, 2, 0, 3))


_plain_conv.defvjp(_plain_conv_fwd, _plain_conv_bwd)


def _custom_vjp_backend() -> bool:
    """Whether the backend tracing now needs `_plain_conv`: XLA:CPU (see above). GPU and TPU
    compilers have their own fast convolution gradients (cuDNN's among them), inside loops too."""
    return jax.default_backend() == "cpu"


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None, **kwargs):
    """`jax.lax.conv_general_dilated`, through `_plain_conv` on CPU for the case our networks use:
    2-D, stride 1, no dilation or groups, NHWC x HWIO; JAX's own rules elsewhere."""
    plain = (not _FORWARD_MODE.get() and _custom_vjp_backend()
             and lhs.ndim == 4 and tuple(window_strides) == (1, 1) and feature_group_count == 1
             and all(d is None or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation))
             and kwargs.get("out_sharding") is None
             and jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
             == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC))
    if not plain:
        return jax.lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, precision=precision, **kwargs)
    if isinstance(padding, str):  # 'SAME' / 'VALID'
        padding = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], (1, 1), padding)
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    if rhs.shape[:2] == (1, 1) and padding == ((0, 0), (0, 0)):
        # A 1x1 convolution is a GEMM over the pixels. As a dot its weight gradient is one GEMM too;
        # as a convolution, an image-sized-window correlation after a transpose of x (paper step
        # 13.6 -> 11.1 s as dots, benchmarks.train_step --configs=paper).
        return jax.lax.dot_general(lhs, rhs[0, 0], (((3,), (0,)), ((), ())), precision=precision,
                                   preferred_element_type=kwargs.get("preferred_element_type"))
    return _plain_conv(lhs, rhs, padding, precision, kwargs.get("preferred_element_type"))


class ChannelAttention(nnx.Module):
    """Squeeze-and-excitation: global average pool, 1x1 reduce, ReLU, 1x1 expand, sigmoid gate."""

    def __init__(self, features: int, reduction: int = REDUCTION, *, rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        hidden = max(1, features // reduction)
        self.reduce = conv(features, hidden, 1, rngs=rngs)
        self.expand = conv(hidden, features, 1, rngs=rngs)

    def __call__(self, x):
        w = jnp.mean(x, axis=(1, 2), keepdims=True)
        w = jax.nn.sigmoid(self.expand(jax.nn.relu(self.reduce(w))))
        return x * w


class RCAB(nnx.Module):
    """Residual channel attention block (Zhang et al. 2018; paper Fig. 1(f)):
    x + CA(conv3x3(ReLU(conv3x3(x))))."""

    def __init__(self, features: int, reduction: int = REDUCTION, *, rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        self.conv1 = conv(features, features, 3, rngs=rngs)
        self.conv2 = conv(features, features, 3, rngs=rngs)
        self.attention = ChannelAttention(features, reduction, rngs=rngs)

    def __call__(self, x):
        return x + self.attention(self.conv2(jax.nn.relu(self.conv1(x))))


class RCABs(nnx.Module):
    """`count` RCABs in sequence (count = 0 is the identity)."""

    def __init__(self, features: int, count: int, reduction: int = REDUCTION, *,
                 rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        self.blocks = nnx.List([RCAB(features, reduction, rngs=rngs) for _ in range(count)])

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def halve(x, axis: int):
    """`jax.image.resize(..., "bilinear")` to half the (even) length of `axis`, as a 4-tap stencil.

    The resize's antialiased triangle filter, widened by 2, puts weights (1, 3, 3, 1) / 8 on inputs
    2j-1 .. 2j+2 for output j; at the two ends the tap outside the image is dropped and the rest
    renormalised ((3, 3, 1) / 7). Same values as the resize, which contracts a dense
    [n/2, n] weight matrix per axis: O(n) times more work, plus transposes in the backward pass.
    The gradient is the adjoint stencil (`_halve_adjoint`), not JAX's transpose of the pads and
    slices, which XLA:CPU ran as chains of full-size pads and adds.

    >>> halve(jnp.arange(8.0), 0)
    Array([0.71428573, 2.5       , 4.5       , 6.2857146 ], dtype=float32)
    """
    n = x.shape[axis]
    if n % 2:
        raise ValueError(f"halve needs an even length, got {n} along axis {axis}")
    return (_halve if _FORWARD_MODE.get() else _halve_vjp)(x, axis)


def double(x, axis: int):
    """`jax.image.resize(..., "bilinear")` to twice the length of `axis`, as a 2-tap stencil.

    Output 2k is 3/4 x[k] + 1/4 x[k-1], output 2k+1 is 3/4 x[k] + 1/4 x[k+1] (half-pixel centres);
    at the ends the resize renormalises the one tap inside, which is edge replication. The
    gradient is the adjoint stencil (`_double_adjoint`).

    >>> double(jnp.arange(3.0), 0)
    Array([0.  , 0.25, 0.75, 1.25, 1.75, 2.  ], dtype=float32)
    """
    return (_double if _FORWARD_MODE.get() else _double_vjp)(x, axis)


def _shift(x, axis: int, by: int):
    """x moved by `by` (+1 or -1) along `axis`, zero-filled: out[k] = x[k - by]."""
    return jax.lax.pad(x, jnp.zeros((), x.dtype),
                       [(by, -by, 0) if d == axis else (0, 0, 0) for d in range(x.ndim)])


def _deinterleave(x, axis: int):
    """x[2k] and x[2k + 1] along `axis`."""
    pairs = x.reshape(x.shape[:axis] + (x.shape[axis] // 2, 2) + x.shape[axis + 1:])
    return (jax.lax.index_in_dim(pairs, 0, axis + 1, keepdims=False),
            jax.lax.index_in_dim(pairs, 1, axis + 1, keepdims=False))


def _interleave(even, odd, axis: int):
    """The inverse of `_deinterleave`."""
    out = jnp.stack([even, odd], axis=axis + 1)
    return out.reshape(even.shape[:axis] + (2 * even.shape[axis],) + even.shape[axis + 1:])


def _halve_scale(n_out: int, ndim: int, axis: int, dtype):
    """1 / (the stencil's weights inside the image) per output: 1/8, 1/7 at the two ends."""
    total = np.full(n_out, 8.0)
    total[0] -= 1
    total[-1] -= 1
    return jnp.asarray((1 / total).reshape((-1,) + (1,) * (ndim - axis - 1)), dtype)


def _halve(x, axis: int):
    even, odd = _deinterleave(x, axis)
    scale = _halve_scale(even.shape[axis], x.ndim, axis, x.dtype)
    return (_shift(odd, axis, 1) + 3 * (even + odd) + _shift(even, axis, -1)) * scale


def _halve_adjoint(g, axis: int):
    # x[2j] has weight 3 in output j and 1 in output j - 1; x[2j + 1] has 3 in j and 1 in j + 1.
    s = g * _halve_scale(g.shape[axis], g.ndim, axis, g.dtype)
    return _interleave(3 * s + _shift(s, axis, 1), 3 * s + _shift(s, axis, -1), axis)


def _double(x, axis: int):
    n = x.shape[axis]
    padded = jnp.pad(x, [(1, 1) if d == axis else (0, 0) for d in range(x.ndim)], mode="edge")
    prev = jax.lax.slice_in_dim(padded, 0, n, axis=axis)
    after = jax.lax.slice_in_dim(padded, 2, n + 2, axis=axis)
    return _interleave(0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * after, axis)


def _double_adjoint(g, axis: int):
    # x[k] feeds outputs 2k, 2k + 1 (3/4 each), 2k + 2 and 2k - 1 (1/4 each); at the ends the
    # replicated edge sends the outer output's quarter back to x[0] (from 2 * 0) and x[n - 1].
    even, odd = _deinterleave(g, axis)
    last = even.shape[axis] - 1
    odd_before = jnp.concatenate([jax.lax.slice_in_dim(even, 0, 1, axis=axis),
                                  jax.lax.slice_in_dim(odd, 0, last, axis=axis)], axis)
    even_after = jnp.concatenate([jax.lax.slice_in_dim(even, 1, last + 1, axis=axis),
                                  jax.lax.slice_in_dim(odd, last, last + 1, axis=axis)], axis)
    return 0.75 * (even + odd) + 0.25 * (odd_before + even_after)


def _linear_vjp(forward, adjoint):
    """`forward` (linear in x, `axis` static) with `adjoint` as its reverse-mode rule."""
    f = jax.custom_vjp(forward, nondiff_argnums=(1,))
    f.defvjp(lambda x, axis: (forward(x, axis), None), lambda axis, _, g: (adjoint(g, axis),))
    return f


_halve_vjp = _linear_vjp(_halve, _halve_adjoint)
_double_vjp = _linear_vjp(_double, _double_adjoint)


class Resample(nnx.Module):
    """Bilinear resize by `factor` (0.5 or 2) followed by a 1x1 convolution that changes the width.

    The resize is `jax.image.resize`'s antialiased bilinear, computed by the stencils `halve` and
    `double` (same values, a fraction of the work).
    """

    def __init__(self, in_features: int, out_features: int, factor: float, *,
                 rngs: nnx.Rngs | Keys):
        if factor not in (0.5, 2.0):
            raise ValueError(f"factor must be 0.5 or 2, got {factor}")
        self.factor = factor
        self.proj = conv(in_features, out_features, 1, rngs=rngs)

    def __call__(self, x):
        resample = halve if self.factor == 0.5 else double
        return self.proj(resample(resample(x, 1), 2))


def scale_widths(features: int, scales: int) -> tuple[int, ...]:
    """Widths per scale: features x (1, 1.5, 2, 2.5, ...), i.e. 64, 96, 128 for features = 64."""
    return tuple(int(round(features * (2 + i) / 2)) for i in range(scales))


class EncoderDecoder(nnx.Module):
    """Multi-scale encoder-decoder (paper Fig. 1(e)) returning one decoder feature map per scale.

    Scale i has resolution 1/2^i and width `widths[i]`; the input's height and width must be
    multiples of 2^(scales - 1). Encoder level i: [downsample + 1x1 from level i-1] then `rcabs`
    RCABs. Skips: `skip_rcabs` RCABs on each encoder output but the coarsest. Decoder level i:
    [upsample + 1x1 from level i+1, concatenated with the skip, fused by a 1x1] then `rcabs` RCABs.

    With `multi_input=True` the call takes one feature map per scale (the thresholded prior features
    of MGSTNet's inverse extractor F~): level 0 starts from `xs[0]`, level i > 0 concatenates the
    downsampled encoder features with `xs[i]` and fuses them with a 1x1 convolution.
    """

    def __init__(self, widths: Sequence[int], rcabs: int, *, skip_rcabs: int = 1,
                 multi_input: bool = False, reduction: int = REDUCTION, rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        widths = tuple(widths)
        if not widths:
            raise ValueError("need at least one scale")
        self.widths = widths
        self.multi_input = multi_input
        pairs = list(zip(widths[:-1], widths[1:]))
        self.encoders = nnx.List([RCABs(w, rcabs, reduction, rngs=rngs) for w in widths])
        self.downs = nnx.List([Resample(a, b, 0.5, rngs=rngs) for a, b in pairs])
        self.input_fusions = nnx.List(
            [conv(2 * b, b, 1, rngs=rngs) for _, b in pairs] if multi_input else [])
        self.skips = nnx.List([RCABs(a, skip_rcabs, reduction, rngs=rngs) for a, _ in pairs])
        self.ups = nnx.List([Resample(b, a, 2.0, rngs=rngs) for a, b in pairs])
        self.skip_fusions = nnx.List([conv(2 * a, a, 1, rngs=rngs) for a, _ in pairs])
        self.decoders = nnx.List([RCABs(w, rcabs, reduction, rngs=rngs) for w in widths])

    @property
    def scales(self) -> int:
        return len(self.widths)

    def __call__(self, x) -> tuple[jax.Array, ...]:
        xs = tuple(x) if self.multi_input else (x,)
        if len(xs) != (self.scales if self.multi_input else 1):
            raise ValueError(f"expected {self.scales} inputs, got {len(xs)}")
        encoded = [self.encoders[0](xs[0])]
        for i in range(1, self.scales):
            e = self.downs[i - 1](encoded[-1])
            if self.multi_input:
                e = self.input_fusions[i - 1](jnp.concatenate([e, xs[i]], axis=-1))
            encoded.append(self.encoders[i](e))
        decoded = [self.decoders[-1](encoded[-1])]
        for i in reversed(range(self.scales - 1)):
            d = self.ups[i](decoded[0])
            d = self.skip_fusions[i](jnp.concatenate([d, self.skips[i](encoded[i])], axis=-1))
            decoded.insert(0, self.decoders[i](d))
        return tuple(decoded)


# --- Layers of the CNN baselines (MADN, IDC, MTWDN) ------------------------------------------------

def check_sizes(channels: int, features: int, scales: int, resblocks: int):
    """The constructor arguments shared by MADN, IDC and MTWDN."""
    for name, value in (("channels", channels), ("features", features), ("scales", scales)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if resblocks < 0:
        raise ValueError(f"resblocks must be >= 0, got {resblocks}")


def strided_conv(in_features: int, out_features: int, kernel_size: int = 3, stride: int = 1, *,
                 gain: float = 1.0, rngs: nnx.Rngs | Keys) -> nnx.Conv:
    """A square 'SAME' convolution with bias and stride `stride` (the output is ceil(size / stride))."""
    init = lecun_normal if gain == 1.0 else functools.partial(lecun_normal, gain=gain)
    return nnx.Conv(in_features, out_features, (kernel_size, kernel_size),
                    strides=(stride, stride), padding="SAME", kernel_init=init,
                    rngs=as_keys(rngs))


def deconv(in_features: int, out_features: int, kernel_size: int = 3, stride: int = 2, *,
           rngs: nnx.Rngs | Keys) -> nnx.ConvTranspose:
    """Transposed convolution; 'SAME' padding multiplies the size by `stride`."""
    return nnx.ConvTranspose(in_features, out_features, (kernel_size, kernel_size),
                             strides=(stride, stride), padding="SAME", kernel_init=lecun_normal,
                             rngs=as_keys(rngs))


class ResBlock(nnx.Module):
    """x + conv(ReLU(conv(x))), square `kernel_size` convolutions, no batch norm, no final ReLU
    (the residual block of Tao et al.'s scale-recurrent network, which MADN, IDC and MTWDN use:
    3x3 in MADN and MTWDN, 5x5 in IDC)."""

    def __init__(self, features: int, kernel_size: int = 3, *, rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        self.conv1 = conv(features, features, kernel_size, rngs=rngs)
        self.conv2 = conv(features, features, kernel_size, rngs=rngs)

    def __call__(self, x):
        return x + self.conv2(jax.nn.relu(self.conv1(x)))


class ResBlocks(nnx.Module):
    """`count` ResBlocks in sequence (count = 0 is the identity)."""

    def __init__(self, features: int, count: int, kernel_size: int = 3, *, rngs: nnx.Rngs | Keys):
        rngs = as_keys(rngs)
        self.blocks = nnx.List([ResBlock(features, kernel_size, rngs=rngs) for _ in range(count)])

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return x
