"""A trained network ready to use: `unroll.load(workdir)` reads the model and its configuration from a
checkpoint (no flagfile, no optimiser), and `Model.deblur` restores one image of any size."""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from unroll import noise as noise_estimator
from unroll.checkpoint import CheckpointError, Checkpoints
from unroll.classical.warm import warm_start
from unroll.config import Config, ConfigError
from unroll.inference import tiling
from unroll.models import registry
from unroll.models.mgstnet import MGSTNet

GLOBAL_KERNEL_CROPS = 4
# `Model.check_noise`: outside the training range by more than (25 % of the bound + 0.002).
NOISE_MARGIN = (0.25, 0.002)
SCENE_NOISE_SIDE = 2048  # `scene_noise` reads at most this central crop of a stored scene


def image_path(model: MGSTNet, g, stage_kernels, sigma=None, h0=None, trusted=None):
    """MGSTNet's output image when stage k uses the given kernel h_k (`stage_kernels[k]`,
    [N, k, k]) instead of its own estimate: IGDM (eq. 17) then IPMM (eq. 18) per stage, from u_0 =
    `model.initial_image(g, h0, trusted)` (g itself unless the model restores g with a given h0).
    `sigma`: the noise std of a noise-conditional network (None: estimated from `g`).

    With the kernels the network itself estimates on `g` (from `h0`), this is exactly
    `model(g, h0).images[-1]`.
    """
    t = model.noise_features(g, sigma)
    dtype = g.dtype
    g32 = g.astype(jnp.promote_types(dtype, jnp.float32))
    u = g if h0 is None else model.initial_image(g, h0.astype(g32.dtype), trusted)
    if len(stage_kernels) != model.num_stages:
        raise ValueError(f"expected {model.num_stages} stage kernels, got {len(stage_kernels)}")
    for k, h in enumerate(stage_kernels):
        stage = model.stage(k)
        r = stage.image_update(u.astype(g32.dtype), h.astype(jnp.float32), g32, t).astype(dtype)
        u = stage.prox_image(r, t).astype(dtype)
    return u


class Model:
    """A network, its parameters and configuration, and jitted functions that apply it (compiled
    once per input shape).

    `module` is the `nnx` module (for `jax.grad` and the studies: `nnx.split(model.module)`);
    `graphdef`, `params` its split form; `step` the training step of the checkpoint.
    """

    def __init__(self, config: Config, graphdef, params, step: int | None = None):
        self.config, self.graphdef, self.params, self.step = config, graphdef, params, step
        spec = registry.spec(config)
        self.is_mgstnet = config.model == "mgstnet"
        # (h_0, trusted) from the classical solver (a warm start), or None: the uniform h_0.
        self._warm_start = warm_start(config) if self.is_mgstnet else None
        # Noise-conditional MGSTNet takes the noise std as `sigma` (None: it estimates it itself).
        self.noise_conditional = config.noise_conditional
        net = lambda p: nnx.merge(graphdef, p)  # noqa: E731
        self._apply = jax.jit(lambda p, g, h0=None, sigma=None, trusted=None:
                              _run(net(p), g, h0, sigma, trusted))
        # Only the image and kernel leave the device (not every stage's intermediates).
        self._predict = jax.jit(lambda p, g, h0=None, sigma=None, trusted=None: _image_and_kernel(
            spec, _run(net(p), g, h0, sigma, trusted)))
        self._stage_kernels = jax.jit(lambda p, g, h0=None, sigma=None, trusted=None: tuple(
            _run(net(p), g, h0, sigma, trusted).kernels))
        self._image_path = jax.jit(lambda p, g, ks, sigma=None, h0=None, trusted=None: image_path(
            net(p), g, ks, sigma, h0, trusted))

    @property
    def module(self) -> nnx.Module:
        return nnx.merge(self.graphdef, self.params)

    def initial_kernels(self, g):
        """None for the network's own h_0, or h_0 `[N, k, k]` from the classical solver when the
        configuration asks for a warm start (`kernel_init="classical"`)."""
        return self.warm_start(g)[0]

    def warm_start(self, g):
        """(h_0 `[N, k, k]`, trusted `[N]`) of the warm start (`unroll.classical.warm.initial_state`:
        the classical estimate, and whether its restoration passed the check), or (None, None)
        for the network's own h_0."""
        if self._warm_start is None:
            return None, None
        h0, trusted = self._warm_start(np.asarray(g, np.float32))
        return jnp.asarray(h0), jnp.asarray(trusted)

    def sigma(self, noise: float | None, count: int = 1):
        """What the network gets as `sigma` for `count` images of noise std `noise`: `[count]` for a
        noise-conditional model given a noise, else None (unconditional, or the network estimates
        it). Negative or non-finite `noise` is a `ValueError`."""
        noise = check_noise_value(noise)
        if noise is None or not self.noise_conditional:
            return None
        return jnp.full((count,), noise, jnp.float32)

    def noise_range(self) -> tuple[float, float]:
        """(low, high): the noise std range the model was trained on, `[noise, max(noise, noise_max)]`
        of its configuration (a fixed std when `noise_max` is 0)."""
        low = float(self.config.noise)
        return low, max(low, float(self.config.noise_max))

    def check_noise(self, sigma: float) -> str | None:
        """A one-line warning when the noise std `sigma` lies outside `noise_range()` by more than a
        margin, else None. The margin (25 % of the bound plus 0.002, `NOISE_MARGIN`) leaves room
        for the estimator's error (`unroll.noise`: a few per cent, and texture read as a little
        noise on clean images) and for the slack any trained network has near its range.

        >>> import numpy as np
        >>> from unroll.config import Config
        >>> from unroll.models import registry
        >>> config = Config(stages=1, scales=1, kernel_rcabs=0, image_rcabs=0, features=4,
        ...                 kernel_features=4, kernel_size=5, noise=0.001)
        >>> model = Model(config, *registry.build_split(config))
        >>> model.noise_range(), model.check_noise(0.003)
        ((0.001, 0.001), None)
        >>> print(model.check_noise(0.05))
        noise 0.0500 is above this model's training range [0.0010, 0.0010]: expect noise or artefacts
        """
        low, high = self.noise_range()
        relative, absolute = NOISE_MARGIN
        if sigma > high * (1 + relative) + absolute:
            where, effect = "above", "noise or artefacts"
        elif sigma < low / (1 + relative) - absolute:
            where, effect = "below", "oversmoothed detail"
        else:
            return None
        return (f"noise {sigma:.4f} is {where} this model's training range [{low:.4f}, {high:.4f}]: "
                f"expect {effect}")

    def __call__(self, g, noise: float | None = None):
        """The network's full output on a batch `g [N, H, W, C]` (per-stage results for MGSTNet);
        `noise` as in `deblur`."""
        g = jnp.asarray(g)
        h0, trusted = self.warm_start(g)
        return self._apply(self.params, g, h0, self.sigma(noise, g.shape[0]), trusted)

    def predict(self, image, noise: float | None = None):
        """`[1, H, W, C]` -> (restored [1, H, W, C], kernel [1, k, k] or None), on the device;
        `noise` as in `deblur`."""
        image = jnp.asarray(image)
        h0, trusted = self.warm_start(image)
        return self._predict(self.params, image, h0, self.sigma(noise, image.shape[0]), trusted)

    def global_kernels(self, image: np.ndarray, tile: int, crops: int = GLOBAL_KERNEL_CROPS,
                       noise: float | None = None):
        """Per-stage kernels `[stages][1, k, k]` averaged over the `crops` most textured tiles (an
        average of nonnegative kernels that sum to one is again one); `noise` as in `deblur`."""
        return self._global_kernels(image, tile, crops, noise)[0]

    def _global_kernels(self, image, tile: int, crops: int = GLOBAL_KERNEL_CROPS, noise=None):
        """(`global_kernels`, the warm start's h_0 `[1, k, k]` averaged over the same crops, or None)."""
        totals, h0_total = None, None
        positions = tiling.texture_crops(image, tile, crops)
        for top, left in positions:
            crop = jnp.asarray(tiling.crop_tile(image, top, left, tile))
            h0, trusted = self.warm_start(crop)
            ks = [np.asarray(k, np.float64) for k in self._stage_kernels(
                self.params, crop, h0, self.sigma(noise), trusted)]
            totals = ks if totals is None else [t + k for t, k in zip(totals, ks)]
            if h0 is not None:
                h0 = np.asarray(h0, np.float64)
                h0_total = h0 if h0_total is None else h0_total + h0
        h0_mean = None if h0_total is None else jnp.asarray(h0_total / len(positions), jnp.float32)
        return tuple(jnp.asarray(t / len(positions), jnp.float32) for t in totals), h0_mean

    def deblur(self, image, tile_size: int = 0, tile_overlap: int = 32, global_kernel: bool = False,
               progress: bool = False, noise: float | None = None):
        """Restore one image -> (restored, kernel).

        `image`: an array `[H, W, C]` or `[H, W]`, or a PIL image. Floats are read as values in
        [0, 1] and give float32; unsigned integers (uint8, uint16, ...) are scaled by their largest
        value and the result is given back in their dtype and range. A gray image (`[H, W]` or
        `[H, W, 1]`) gives a gray result of its shape, through the RGB network when the model is
        RGB. `kernel` is `[k, k]`, `[rows, cols, k, k]` per tile, or None for a model that
        estimates none. Non-finite values are a `ValueError`.

        `tile_size=T` runs overlapping tiles of at most T x T blended smoothly (each tile its own
        kernel, or one kernel for the whole image with `global_kernel`): as many tiles as T needs,
        each made as small as still covers the image (`tiling.fit_tile`); 0 runs the whole image.

        `noise`: the image's noise std on the [0, 1] scale (integer images too), if known. A
        noise-conditional model (`noise_conditional`) gets it as `sigma`; with None it estimates it
        (`unroll.noise`): the network itself on a whole image, once on the whole scene for tiles,
        so that every tile gets the same. An unconditional model ignores it (`check_noise` tells
        whether it fits the model's training range). Negative or non-finite noise is a `ValueError`.

        >>> import numpy as np
        >>> from unroll.config import Config
        >>> from unroll.models import registry
        >>> config = Config(stages=1, scales=1, kernel_rcabs=0, image_rcabs=0, features=4,
        ...                 kernel_features=4, kernel_size=5, channels=3)
        >>> model = Model(config, *registry.build_split(config))  # untrained: unroll.load(workdir)
        >>> restored, kernel = model.deblur(np.full((20, 24, 3), 0.5, np.float32))
        >>> restored.shape, restored.dtype, kernel.shape, round(float(kernel.sum()), 4)
        ((20, 24, 3), dtype('float32'), (5, 5), 1.0)

        Integer images come back in their own dtype and range; gray gives gray; PIL images work:

        >>> model.deblur(np.full((20, 24, 3), 200, np.uint8))[0].dtype
        dtype('uint8')
        >>> model.deblur(np.full((20, 24), 40000, np.uint16))[0].shape
        (20, 24)
        >>> from PIL import Image
        >>> model.deblur(Image.new("L", (24, 20), 128))[0].shape
        (20, 24)
        >>> model.deblur(np.full((20, 24, 3), 0.5, np.float32), noise=0.01)[0].shape
        (20, 24, 3)
        >>> model.deblur(np.full((20, 24), np.nan, np.float32))
        Traceback (most recent call last):
        ...
        ValueError: the image has 480 non-finite values (NaN or infinity); deblur needs finite values
        """
        noise = check_noise_value(noise)
        image, alpha = _as_array(image)
        dtype = image.dtype
        if dtype == np.bool_:
            image = image.astype(np.float32)
        elif np.issubdtype(dtype, np.signedinteger) or not np.issubdtype(dtype, np.number):
            raise ValueError(f"image dtype {dtype} is not supported: give floats in [0, 1] or "
                             "unsigned integers (uint8, uint16)")
        scale = float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.unsignedinteger) else None
        shape = image.shape
        image = np.asarray(image, np.float32)
        if scale is not None:
            image = image / np.float32(scale)
        elif not np.isfinite(image).all():
            raise ValueError(f"the image has {int(np.size(image) - np.isfinite(image).sum())} "
                             "non-finite values (NaN or infinity); deblur needs finite values")
        if image.ndim == 2:
            image = image[:, :, None]
        gray = image.ndim == 3 and image.shape[-1] == 1 and self.config.channels == 3
        if gray:  # through the RGB network, averaged back to one band
            image = np.repeat(image, 3, axis=-1)
        if image.ndim != 3 or image.shape[-1] != self.config.channels:
            raise ValueError(f"expected an image [H, W, {self.config.channels}]"
                             + " or [H, W]" + (" or [H, W, 1]" if self.config.channels == 3 else "")
                             + f", got {shape}")
        k = self.config.kernel_size
        if min(image.shape[:2]) < k:
            raise ValueError(f"image {image.shape[0]}x{image.shape[1]} is smaller than the "
                             f"{k}x{k} kernel")
        restored, kernel = self._deblur(image, tile_size, tile_overlap, global_kernel, progress, noise)
        if gray:
            restored = restored.mean(axis=-1, keepdims=True)
        restored = restored.reshape(shape[:2] + restored.shape[2:] if len(shape) == 3 else shape[:2])
        if scale is not None:
            restored = np.rint(np.clip(restored, 0.0, 1.0) * scale).astype(dtype)
        if alpha is not None:  # a PIL image's alpha band, passed through
            restored = np.concatenate([restored, alpha], axis=-1)
        return restored, kernel

    def tile_predictor(self, image, tile_size: int, global_kernel: bool = False,
                       noise: float | None = None):
        """(predict_tile for `tiling`, the global kernel [k, k] or None): each tile estimates its own
        kernel, or with `global_kernel` every tile runs MGSTNet's image path with per-stage kernels
        estimated on the most textured tiles of `image` (an array or windows). A noise-conditional
        model given no `noise` gets the scene's (`scene_noise`), the same for every tile."""
        noise = check_noise_value(noise)
        if self.noise_conditional and noise is None:
            noise = scene_noise(image)
        if not global_kernel:
            return (lambda t: self.predict(t, noise)), None
        if not self.is_mgstnet:
            raise ConfigError(f"--global_kernel needs a model whose image path takes a kernel "
                              f"(mgstnet), not {self.config.model}")
        kernels, h0 = self._global_kernels(image, tile_size, noise=noise)
        sigma = noise if self.noise_conditional else None
        return (lambda t: (self._image_path(self.params, jnp.asarray(t), kernels, sigma, h0), None),
                np.asarray(kernels[-1][0]))

    def _deblur(self, image, tile_size, tile_overlap, global_kernel, progress, noise):
        if not tile_size:
            restored, kernel = self.predict(image[None], noise)
            return np.asarray(restored[0]), None if kernel is None else np.asarray(kernel[0])
        tile_size = tiling.fit_tile(image.shape[:2], tile_size, tile_overlap)  # as many tiles, smaller
        predict_tile, kernel = self.tile_predictor(image, tile_size, global_kernel, noise)
        result = tiling.deblur_tiled(predict_tile, image, tile_size, tile_overlap, progress=progress)
        return result.image, result.kernels if kernel is None else kernel


def check_noise_value(noise):
    """`noise` as a float (None stays None); a negative or non-finite one is a one-line `ValueError`."""
    if noise is None:
        return None
    value = float(noise)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"noise must be a finite standard deviation >= 0 on the [0, 1] scale, "
                         f"got {noise}")
    return value


def scene_noise(image, max_side: int = SCENE_NOISE_SIDE) -> float:
    """The noise std of a whole scene (`unroll.noise.estimate`): an array `[H, W, C]`, or windows
    of a stored scene (`tiling.ImageWindows`), of which a central crop of at most `max_side`
    pixels a side is read (the estimator samples at most `noise.MAX_PATCHES` patches anyway)."""
    if isinstance(image, np.ndarray):
        return noise_estimator.estimate(image)
    height, width = image.shape[:2]
    top, left = max(0, (height - max_side) // 2), max(0, (width - max_side) // 2)
    return noise_estimator.estimate(image[top:top + max_side, left:left + max_side])


def _run(net, g, h0, sigma, trusted=None):
    """`net(g)` with MGSTNet's optional inputs h_0, sigma and trusted where given (other models take
    `g` alone)."""
    args = () if h0 is None else (h0,)
    kwargs = {k: v for k, v in (("sigma", sigma), ("trusted", trusted)) if v is not None}
    return net(g, *args, **kwargs)


def _as_array(image):
    """(array, alpha band [H, W, 1] or None): a PIL image as its samples (palette and other modes
    as RGB, a trailing alpha band kept apart), anything else as `np.asarray`."""
    if not (hasattr(image, "mode") and hasattr(image, "getbands")):
        return np.asarray(image), None
    if image.mode not in ("L", "LA", "RGB", "RGBA", "I;16", "I", "F"):
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info
                              else "RGB")
    array = np.asarray(image)
    if image.mode == "I":  # 32-bit integer samples hold 16-bit values (Pillow's 16-bit PNGs)
        array = array.astype(np.uint16) if array.min() >= 0 and array.max() < 2 ** 16 else array
    if image.mode in ("LA", "RGBA"):
        return array[..., :-1], array[..., -1:]
    return array, None


def _image_and_kernel(spec, out):
    return spec.image(out), spec.kernel(out)


def load(workdir, checkpoint: str = "best") -> Model:
    """The network trained in `workdir`, read from its checkpoint with its own configuration.

    `checkpoint="best"` (the best evaluation; the newest save when none was evaluated yet) or
    "latest". Pass `model.config` on to evaluation or deblurring; no flagfile is needed.

    >>> load("/nonexistent")
    Traceback (most recent call last):
    ...
    unroll.checkpoint.CheckpointError: no checkpoint in /nonexistent: train there first (--mode=train)
    """
    if checkpoint not in ("best", "latest"):
        raise ValueError(f"checkpoint must be 'best' or 'latest', got {checkpoint!r}")
    workdir = Path(workdir)
    with Checkpoints(workdir) as checkpoints:
        if checkpoint == "best" and checkpoints.step("best") is None:
            checkpoint = "latest"
        config = checkpoints.saved_config(checkpoint)
        if config is None:
            raise CheckpointError(f"no checkpoint in {workdir}: train there first (--mode=train)")
        graphdef, params, step = checkpoints.restore_model(checkpoint)
    return Model(config, graphdef, params, step)
