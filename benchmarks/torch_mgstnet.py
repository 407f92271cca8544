"""Train-step throughput of MGSTNet in eager PyTorch next to the JAX trainer's jitted step.

    pip install torch==2.13.0   # CPU wheel; a benchmark-only dependency, not in requirements.txt
    python -m benchmarks.torch_mgstnet [--configs=demo,shipped,paper] [--repeats=5] [--paper_batch=1] [--remat]
        [--stage_unroll=N]

The PyTorch network below mirrors unroll.models.mgstnet layer for layer (same module names, so the
JAX parameters load into it with `load_state_dict(strict=True)`), plus the FFT blur with symmetric
boundary and its adjoints (unroll.ops), the gradient steps (unroll.steps), the shrinkage operators
(unroll.shrinkage) and eq. (21)'s loss (unroll.losses). It runs in plain eager mode (no torch.compile
or torch.jit), NCHW, float32, with torch.set_num_threads(<cores>).

Prints one JSON object with, per configuration (benchmarks.train_step.CONFIGS, same synthetic batch):
  * `torch`: median seconds and images/s of a train step (forward, loss, backward, Adam step) over
    `repeats` steps after 2 warm-up steps;
  * `jax`: benchmarks.train_step.measure() (compile seconds, images/s of the jitted, sharded step),
    with the stages unrolled as CPU training runs them (--stage_unroll=1: the rolled scan);
  * `jax_over_torch`: jax images/s / torch images/s (the bar is >= 1, the goal 2 at the demo size);
  * `check`: both models' loss on the batch from the same initial parameters (a correctness check).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from flax import nnx
from torch import nn

from benchmarks.train_step import CONFIGS, cpu_stage_unroll, measure, synthetic_batch
from unroll import hostmem, losses
from unroll.config import Config
from unroll.models import registry
from unroll.models.blocks import REDUCTION, scale_widths
from unroll.models.mgstnet import MU_INIT, P_INIT, RHO_INIT, THETA_INIT

# ----------------------------------------------------------------------------------------------------
# Blur operators (unroll.ops, symmetric boundary), images NCHW, kernels [N, kh, kw].


def _fast_len(n: int) -> int:
    while True:
        k = n
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return n
        n += 1


def _geometry(H, W, kh, kw):
    ph, pw = kh // 2, kw // 2
    return (ph, pw), (_fast_len(H + 2 * ph), _fast_len(W + 2 * pw))


def _flip_pad(x, before, after, dim):
    """numpy's "symmetric" padding along `dim` (the edge sample repeated); F.pad's "reflect" skips
    the edge, so build it from flipped slices."""
    n = x.shape[dim]
    parts = [x.narrow(dim, 0, before).flip(dim)] if before else []
    parts.append(x)
    if after:
        parts.append(x.narrow(dim, n - after, after).flip(dim))
    return torch.cat(parts, dim) if len(parts) > 1 else x


def pad_symmetric(x, top, bottom, left, right):
    return _flip_pad(_flip_pad(x, top, bottom, -2), left, right, -1)


def _fold(x, before, after, dim):
    """Transpose of `_flip_pad`: add the flipped borders back onto the edge samples they copied."""
    n = x.shape[dim] - before - after
    core = x.narrow(dim, before, n)
    if before:
        border = x.narrow(dim, 0, before).flip(dim)
        core = core + F.pad(border, _pad_spec(dim, x.ndim, 0, n - before))
    if after:
        border = x.narrow(dim, before + n, after).flip(dim)
        core = core + F.pad(border, _pad_spec(dim, x.ndim, n - after, 0))
    return core


def _pad_spec(dim, ndim, before, after):
    spec = [0, 0] * (ndim - dim % ndim - 1) + [before, after]
    return tuple(spec)


def _kernel_fft(h, grid):
    """rfft2 of kernels [N, kh, kw] on `grid` with the centre at the origin: [N, 1, L1, L2//2+1]."""
    kh, kw = h.shape[-2:]
    big = F.pad(h, (0, grid[1] - kw, 0, grid[0] - kh))
    big = torch.roll(big, (-(kh // 2), -(kw // 2)), dims=(-2, -1))
    return torch.fft.rfft2(big)[:, None]


def _zero_embed(r, pads, grid):
    (ph, pw), (L1, L2) = pads, grid
    H, W = r.shape[-2:]
    return F.pad(r, (pw, L2 - W - pw, ph, L1 - H - ph))


def blur(u, h):
    H, W = u.shape[-2:]
    (ph, pw), grid = _geometry(H, W, *h.shape[-2:])
    U = torch.fft.rfft2(pad_symmetric(u, ph, ph, pw, pw), s=grid)
    x = torch.fft.irfft2(U * _kernel_fft(h, grid), s=grid)
    return x[..., ph:ph + H, pw:pw + W]


def blur_adjoint(r, h):
    H, W = r.shape[-2:]
    pads, grid = _geometry(H, W, *h.shape[-2:])
    (ph, pw) = pads
    X = torch.fft.rfft2(_zero_embed(r, pads, grid)) * _kernel_fft(h, grid).conj()
    x = torch.fft.irfft2(X, s=grid)[..., :H + 2 * ph, :W + 2 * pw]
    return _fold(_fold(x, ph, ph, -2), pw, pw, -1)


def kernel_adjoint(u, r, kh, kw):
    H, W = u.shape[-2:]
    pads, grid = _geometry(H, W, kh, kw)
    (ph, pw) = pads
    U = torch.fft.rfft2(pad_symmetric(u, ph, ph, pw, pw), s=grid)
    X = torch.sum(U.conj() * torch.fft.rfft2(_zero_embed(r, pads, grid)), dim=1)  # over channels
    x = torch.roll(torch.fft.irfft2(X, s=grid), (kh // 2, kw // 2), dims=(-2, -1))
    return x[:, :kh, :kw]


# ----------------------------------------------------------------------------------------------------
# Steps (unroll.steps) and shrinkage (unroll.shrinkage).


def kernel_step(h, u, g, mu):
    n_obs = u.shape[1] * u.shape[2] * u.shape[3]
    grad = kernel_adjoint(u, blur(u, h) - g, *h.shape[-2:]) / n_obs
    return h - mu * grad


def image_step(u, h, g, rho):
    return u - rho * blur_adjoint(blur(u, h) - g, h)


def normalize_kernel(h, eps: float = 1e-8):
    h = torch.relu(h)
    total = h.sum(dim=(-2, -1), keepdim=True)
    uniform = torch.full_like(h, 1.0 / (h.shape[-1] * h.shape[-2]))
    return torch.where(total > eps, h / total.clamp_min(eps), uniform)


_TINY = torch.finfo(torch.float32).tiny


def _safe_log(b):
    return torch.log(b.clamp_min(_TINY))


def soft_threshold(y, theta):
    return torch.sign(y) * torch.relu(y.abs() - theta)


def gst(y, theta, p, iterations: int = 3, delta: float = 1e-5):
    a = y.abs()
    log_b = _safe_log(2 * theta * (1 - p))
    tau = torch.exp(log_b / (2 - p)) + theta * p * torch.exp(log_b * (p - 1) / (2 - p))
    keep = a > tau
    a = torch.where(keep, a, tau)
    s = a
    for _ in range(iterations):
        s = a - theta * p * torch.exp((p - 1) * _safe_log(s + delta))
    return torch.where(keep, torch.sign(y) * s.clamp_min(0), torch.zeros_like(s))


# ----------------------------------------------------------------------------------------------------
# The network (unroll.models.blocks, unroll.models.mgstnet); attribute names match the Flax modules.


def conv(cin, cout, k=3):
    return nn.Conv2d(cin, cout, k, padding=k // 2)  # 'SAME' for odd k


def scalar(value):
    return nn.Parameter(torch.tensor(value, dtype=torch.float32))


def inverse_softplus(y):
    return math.log(math.expm1(y))


class ChannelAttention(nn.Module):
    def __init__(self, features, reduction=REDUCTION):
        super().__init__()
        hidden = max(1, features // reduction)
        self.reduce = conv(features, hidden, 1)
        self.expand = conv(hidden, features, 1)

    def forward(self, x):
        w = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(torch.relu(self.reduce(w))))


class RCAB(nn.Module):
    def __init__(self, features, reduction=REDUCTION):
        super().__init__()
        self.conv1 = conv(features, features)
        self.conv2 = conv(features, features)
        self.attention = ChannelAttention(features, reduction)

    def forward(self, x):
        return x + self.attention(self.conv2(torch.relu(self.conv1(x))))


class RCABs(nn.Module):
    def __init__(self, features, count, reduction=REDUCTION):
        super().__init__()
        self.blocks = nn.ModuleList([RCAB(features, reduction) for _ in range(count)])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class Resample(nn.Module):
    """Bilinear resize by 0.5 or 2, then a 1x1 convolution.

    jax.image.resize's "bilinear" uses half-pixel centres and, when downsampling, a triangle filter
    widened by the scale (antialias=True is its default); F.interpolate with align_corners=False and
    antialias=True computes the same weights. Upsampling needs no antialiasing (identical result),
    so it takes the plain, faster kernel.
    """

    def __init__(self, cin, cout, factor):
        super().__init__()
        self.factor = factor
        self.proj = conv(cin, cout, 1)

    def forward(self, x):
        h, w = x.shape[-2:]
        size = (int(round(h * self.factor)), int(round(w * self.factor)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                          antialias=self.factor < 1)
        return self.proj(x)


class EncoderDecoder(nn.Module):
    def __init__(self, widths, rcabs, skip_rcabs=1, multi_input=False, reduction=REDUCTION):
        super().__init__()
        self.multi_input = multi_input
        pairs = list(zip(widths[:-1], widths[1:]))
        self.encoders = nn.ModuleList([RCABs(w, rcabs, reduction) for w in widths])
        self.downs = nn.ModuleList([Resample(a, b, 0.5) for a, b in pairs])
        self.input_fusions = nn.ModuleList([conv(2 * b, b, 1) for _, b in pairs]
                                           if multi_input else [])
        self.skips = nn.ModuleList([RCABs(a, skip_rcabs, reduction) for a, _ in pairs])
        self.ups = nn.ModuleList([Resample(b, a, 2.0) for a, b in pairs])
        self.skip_fusions = nn.ModuleList([conv(2 * a, a, 1) for a, _ in pairs])
        self.decoders = nn.ModuleList([RCABs(w, rcabs, reduction) for w in widths])

    def forward(self, x):
        xs = tuple(x) if self.multi_input else (x,)
        scales = len(self.encoders)
        encoded = [self.encoders[0](xs[0])]
        for i in range(1, scales):
            e = self.downs[i - 1](encoded[-1])
            if self.multi_input:
                e = self.input_fusions[i - 1](torch.cat([e, xs[i]], dim=1))
            encoded.append(self.encoders[i](e))
        decoded = [self.decoders[-1](encoded[-1])]
        for i in reversed(range(scales - 1)):
            d = self.ups[i](decoded[0])
            d = self.skip_fusions[i](torch.cat([d, self.skips[i](encoded[i])], dim=1))
            decoded.insert(0, self.decoders[i](d))
        return decoded


class SoftThreshold(nn.Module):
    def __init__(self):
        super().__init__()
        self.raw_theta = scalar(inverse_softplus(THETA_INIT))

    def forward(self, y):
        return soft_threshold(y, F.softplus(self.raw_theta))


class GST(nn.Module):
    def __init__(self):
        super().__init__()
        self.raw_theta = scalar(inverse_softplus(THETA_INIT))
        self.p0 = scalar(math.log(P_INIT / (1 - P_INIT)))

    def forward(self, y):
        return gst(y, F.softplus(self.raw_theta), torch.sigmoid(self.p0))


class KernelProx(nn.Module):
    def __init__(self, features, rcabs, reduction=REDUCTION):
        super().__init__()
        self.extractor_head = conv(1, features)
        self.extractor = RCABs(features, rcabs, reduction)
        self.threshold = SoftThreshold()
        self.inverse = RCABs(features, rcabs, reduction)
        self.inverse_tail = conv(features, 1)

    def forward(self, s):
        taps = s.shape[-2] * s.shape[-1]  # O(1) features whatever the kernel size
        x = self.extractor(self.extractor_head((s * taps)[:, None]))
        x = self.inverse_tail(self.inverse(self.threshold(x)))
        return s + x[:, 0] / taps


class ImagePriorExtractor(nn.Module):
    def __init__(self, channels, widths, rcabs, reduction=REDUCTION):
        super().__init__()
        self.head = conv(channels, widths[0])
        self.body = EncoderDecoder(widths, rcabs, reduction=reduction)

    def forward(self, x):
        return self.body(self.head(x))


class InverseImagePriorExtractor(nn.Module):
    def __init__(self, channels, widths, rcabs, reduction=REDUCTION):
        super().__init__()
        self.body = EncoderDecoder(widths, rcabs, multi_input=True, reduction=reduction)
        self.tail = conv(widths[0], channels)

    def forward(self, features):
        return self.tail(self.body(features)[0])


class ImageProx(nn.Module):
    def __init__(self, channels, features, scales, rcabs, threshold, reduction=REDUCTION):
        super().__init__()
        widths = scale_widths(features, scales)
        self.multiple = 2 ** (scales - 1)
        self.extractor = ImagePriorExtractor(channels, widths, rcabs, reduction)
        self.thresholds = nn.ModuleList(
            [GST() if threshold == "gst" else SoftThreshold() for _ in widths])
        self.inverse = InverseImagePriorExtractor(channels, widths, rcabs, reduction)

    def forward(self, r):
        H, W = r.shape[-2:]
        ph, pw = -H % self.multiple, -W % self.multiple
        top, left = ph // 2, pw // 2
        x = pad_symmetric(r, top, ph - top, left, pw - left) if ph or pw else r
        features = [shrink(f) for shrink, f in zip(self.thresholds, self.extractor(x))]
        x = self.inverse(features)
        return r + x[..., top:top + H, left:left + W]


class Stage(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.raw_mu = scalar(inverse_softplus(MU_INIT))
        self.raw_rho = scalar(inverse_softplus(RHO_INIT))
        self.kernel_prox = (KernelProx(c.kernel_features, c.kernel_rcabs)
                            if c.kernel_prox else None)
        self.image_prox = ImageProx(c.channels, c.features, c.scales, c.image_rcabs, c.threshold)

    def forward(self, h, u, g):
        s = kernel_step(h, u, g, F.softplus(self.raw_mu))
        h = normalize_kernel(self.kernel_prox(s) if self.kernel_prox is not None else s)
        r = image_step(u, h, g, F.softplus(self.raw_rho))
        return h, self.image_prox(r)


class MGSTNet(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        if c.boundary != "symmetric":
            raise ValueError("only the symmetric boundary is implemented here")
        self.kernel_size = c.kernel_size
        self.stages = nn.ModuleList([Stage(c) for _ in range(c.stages)])

    def forward(self, g):
        k = self.kernel_size
        h = torch.full((g.shape[0], k, k), 1.0 / k ** 2, dtype=g.dtype)  # h_0 uniform
        u, images, kernels = g, [], []
        for stage in self.stages:
            h, u = stage(h, u, g)
            images.append(u)
            kernels.append(h)
        return images, kernels


def mgstnet_loss(images, kernels, sharp, blurred, alpha):
    """Eq. (21): per-pixel Charbonnier plus alpha times the kernel loss, summed over stages."""
    charbonnier = sum(torch.sqrt((u - sharp) ** 2 + 1e-3 ** 2).mean() for u in images)
    kernel = sum((blur(sharp, h) - blurred).abs().mean() for h in kernels)
    return charbonnier + alpha * kernel


# ----------------------------------------------------------------------------------------------------
# Parameters from JAX, timing.


def torch_state_from_jax(params) -> dict:
    """The Flax parameters under the PyTorch names (conv 'kernel' HWIO -> 'weight' OIHW).

    MGSTNet stores its stages stacked (`stages.<name>` has a leading axis of length K, see
    `unroll.models.mgstnet.MGSTNet`); the PyTorch model has a ModuleList, so stage k's leaves are
    `stages.k.<name>` = x[k].
    """
    state = {}
    for path, value in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [str(k.key) if hasattr(k, "key") else str(k.idx)
                for k in path if hasattr(k, "key") or hasattr(k, "idx")]
        value = np.asarray(value)
        if keys[0] == "stages":
            entries = [(["stages", str(k), *keys[1:]], value[k]) for k in range(value.shape[0])]
        else:
            entries = [(keys, value)]
        for names, x in entries:
            x = np.array(x)  # a writable copy for torch.from_numpy
            if names[-1] == "kernel":
                names[-1], x = "weight", x.transpose(3, 2, 0, 1)
            state[".".join(names)] = torch.from_numpy(np.ascontiguousarray(x))
    return state


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def jax_loss(graphdef, params, batch, config) -> float:
    """Eq. (21) of the JAX model (`unroll.losses.mgstnet_loss`, the trainer's MGSTNet loss)."""
    def loss(p, b):
        out = nnx.merge(graphdef, p)(b["blurred"])
        return losses.mgstnet_loss(out, b["sharp"], b["blurred"], alpha=config.alpha,
                                   boundary=config.boundary)
    return float(jax.jit(loss)(params, {k: jnp.asarray(v) for k, v in batch.items()}))


def log(message):
    """Progress on stderr with the time of day (paper steps take tens of seconds)."""
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def torch_train_step(config: Config):
    """(step, model, graphdef, params, batch): one eager PyTorch Adam step of the network that
    `registry` builds for `config`, from the same initial values, on the synthetic batch."""
    graphdef, params = registry.build_split(config)
    model = MGSTNet(config)
    num_params = sum(p.numel() for p in model.parameters())
    jax_params = registry.num_params(params)
    assert num_params == jax_params, f"torch {num_params} != jax {jax_params} parameters"
    # Same initial values as the JAX trainer; strict loading also checks every name and shape.
    model.load_state_dict(torch_state_from_jax(params), strict=True)
    batch = synthetic_batch(config)
    g, sharp = nchw(batch["blurred"]), nchw(batch["sharp"])
    opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate)  # optax.adam's defaults

    def step():
        opt.zero_grad(set_to_none=True)
        images, kernels = model(g)
        loss = mgstnet_loss(images, kernels, sharp, g, config.alpha)
        loss.backward()
        # The JAX step also returns the gradient norm as a metric.
        grad_norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(p.grad) for p in model.parameters()]))
        opt.step()
        return loss.item(), grad_norm.item()

    return step, model, graphdef, params, batch


def measure_torch(config: Config, repeats: int, check: bool) -> dict:
    step, model, graphdef, params, batch = torch_train_step(config)
    g, sharp = nchw(batch["blurred"]), nchw(batch["sharp"])
    out = {"num_params": sum(p.numel() for p in model.parameters())}
    if check:
        log("check: torch and jax loss")
        with torch.no_grad():
            images, kernels = model(g)
            torch_loss = mgstnet_loss(images, kernels, sharp, g, config.alpha).item()
        reference = jax_loss(graphdef, params, batch, config)
        out["check"] = {"torch_loss": torch_loss, "jax_loss": reference,
                        "rel_diff": abs(torch_loss - reference) / abs(reference)}
    log("torch: warm-up")
    for _ in range(2):
        step()
    log("torch: timed steps")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    out.update(step_s=round(step_s, 4), images_per_s=round(config.batch_size / step_s, 3),
               times_s=[round(t, 4) for t in times])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="demo,paper")
    parser.add_argument("--paper_batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no_check", action="store_true",
                        help="skip the torch-vs-jax loss comparison (one extra JAX compile)")
    parser.add_argument("--remat", action="store_true",
                        help="JAX step with per-stage remat, as the paper flagfiles train; PyTorch "
                             "keeps every activation")
    parser.add_argument("--stage_unroll", type=int, default=None,
                        help="JAX: MGSTNet stages per iteration of the stage loop, 0 for all (no "
                             "loop); default: 0 (as CPU training), or 1 with --remat")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    results = {"torch_version": torch.__version__, "jax_version": jax.__version__,
               "cores": cores, "torch_threads": torch.get_num_threads(),
               "torch_interop_threads": torch.get_num_interop_threads(),
               "jax_devices": jax.device_count(), "jax_platform": jax.devices()[0].platform,
               "xla_flags": os.environ.get("XLA_FLAGS", ""),
               "host_memory_tuned": not jax.config.read("jax_cpu_enable_async_dispatch")}
    for name in args.configs.split(","):
        overrides = dict(CONFIGS[name], steps=1)
        if name == "paper":
            overrides["batch_size"] = args.paper_batch
        config = dataclasses.replace(Config(), **overrides)
        t = measure_torch(config, args.repeats, not args.no_check)
        log(f"{name}: jax")
        j = measure(dataclasses.replace(config, remat=args.remat,
                                        stage_unroll=cpu_stage_unroll(args.stage_unroll, args.remat)),
                    args.repeats)
        log(f"{name}: done")
        assert j["num_params"] == t["num_params"]
        results[name] = {"batch_shape": j["batch_shape"], "num_params": t.pop("num_params"),
                         "check": t.pop("check", None), "torch": t, "jax": j,
                         "jax_over_torch": round(j["images_per_s"] / t["images_per_s"], 3)}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    hostmem.configure()  # reuse XLA:CPU's per-step buffers (unroll/hostmem.py)
    main()
