"""The one place that builds a network from a configuration, and reads its output.

Every model of the project has a `ModelSpec`: how to build it from a `Config`, and how to read the
restored image, the estimated kernel (None for the CNN baselines) and the intermediate images (for
the sample grids) from its output. Training adds losses on top (`unroll.train.tasks`); inference
and the studies need only this.

Your own model: `register(name, ModelSpec(...))`; then `Config(model=name)` validates, the trainer
(`unroll.train.train_and_evaluate`), `experiments.compare` and `unroll.load` take it like a built-in
model (register it in every process that builds or loads it: the name is what a checkpoint stores).
Without a task of its own (`unroll.train.tasks.TASKS`) it trains with the Charbonnier image loss,
plus the kernel loss (eq. 23) when `estimates_kernel`.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> class Sharpen(nnx.Module):  # a one-layer residual network: u = g + conv(g)
...     def __init__(self, channels, rngs):
...         self.conv = nnx.Conv(channels, channels, (3, 3), rngs=rngs)
...     def __call__(self, g):
...         return g + self.conv(g)
>>> register("sharpen", ModelSpec(build=lambda config, rngs: Sharpen(config.channels, rngs),
...                               image=lambda out: out))
>>> config = Config(model="sharpen", channels=1, steps=10).validate()
>>> build(config)(jnp.zeros((1, 8, 8, 1))).shape
(1, 8, 8, 1)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx

from unroll.config import Config
from unroll.models import priors
from unroll.models.idc import IDC
from unroll.models.madn import MADN
from unroll.models.mgstnet import MGSTNet
from unroll.models.mtwdn import MTWDN


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """How to build a model from a `Config` (`build(config, rngs)`) and read its output: the restored
    images, the estimated kernels (default: none) and the intermediate images of the sample grids
    (default: the restored image alone)."""
    build: Callable[[Config, nnx.Rngs], nnx.Module]
    image: Callable[[Any], jax.Array]  # output -> restored images [N, H, W, C]
    kernel: Callable[[Any], jax.Array | None] = lambda out: None  # output -> kernels [N, k, k] or None
    stage_images: Callable[[Any], tuple] | None = None  # output -> intermediate images (sample grids)
    interpretable: bool = False  # every layer is a step of an optimisation algorithm (Table VI)
    estimates_kernel: bool = False

    def __post_init__(self):
        if self.stage_images is None:
            image = self.image
            object.__setattr__(self, "stage_images", lambda out: (image(out),))


def _build_mgstnet(config: Config, rngs: nnx.Rngs) -> MGSTNet:
    image_prox = priors.image_prox_factory(
        config.image_prior, channels=config.channels, features=config.features, scales=config.scales,
        rcabs=config.image_rcabs, threshold=config.threshold, gst_grad=config.gst_grad,
        gst_solver=config.gst_solver)
    return MGSTNet(stages=config.stages, scales=config.scales, kernel_rcabs=config.kernel_rcabs,
                   image_rcabs=config.image_rcabs, channels=config.channels,
                   kernel_size=config.kernel_size, features=config.features,
                   kernel_features=config.kernel_features, boundary=config.boundary,
                   threshold=config.threshold, gst_grad=config.gst_grad,
                   gst_solver=config.gst_solver,
                   kernel_prox=config.kernel_prox, remat=config.remat,
                   stage_unroll=config.stage_unroll, image_prox=image_prox,
                   image_step=config.image_step, noise_conditional=config.noise_conditional,
                   image_init=config.image_init, rngs=rngs)


def _full_size(images) -> tuple:
    """The multi-scale outputs at the input's size (the sample grids compare them with the sharp image)."""
    return tuple(u for u in images if u.shape == images[-1].shape)


def _cnn(cls) -> ModelSpec:
    """A CNN baseline of the papers: multi-scale outputs, coarse to fine, the last is the result."""
    def build(config: Config, rngs: nnx.Rngs):
        return cls(channels=config.channels, features=config.features, scales=config.scales,
                   rngs=rngs)
    return ModelSpec(build=build, image=lambda out: out.images[-1], kernel=lambda out: None,
                     stage_images=lambda out: _full_size(out.images))


MODELS: dict[str, ModelSpec] = {
    "mgstnet": ModelSpec(build=_build_mgstnet, image=lambda out: out.images[-1],
                         kernel=lambda out: out.kernels[-1], stage_images=lambda out: out.images,
                         interpretable=True, estimates_kernel=True),
    "madn": _cnn(MADN),
    "idc": _cnn(IDC),
    "mtwdn": _cnn(MTWDN),
}


BUILT_IN = tuple(MODELS)  # == unroll.config.MODELS


def register(name: str, model_spec: ModelSpec):
    """Add a model under `name` (see the module's example). Registering a name again replaces the
    earlier spec; the built-in models cannot be replaced."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a model name must be an identifier (it names flags and folders), got {name!r}")
    if name in BUILT_IN:
        raise ValueError(f"{name!r} is a built-in model; register yours under another name")
    if not isinstance(model_spec, ModelSpec):
        raise TypeError(f"register({name!r}, ...) needs a ModelSpec, got {type(model_spec).__name__}")
    MODELS[name] = model_spec


def spec(config_or_name: Config | str) -> ModelSpec:
    name = config_or_name if isinstance(config_or_name, str) else config_or_name.model
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; one of {', '.join(MODELS)} "
                         "(unroll.models.registry.register adds a model)")
    return MODELS[name]


def build(config: Config) -> nnx.Module:
    """The network of `config`, initialised from `config.seed`."""
    return spec(config).build(config, nnx.Rngs(config.seed))


def build_split(config: Config):
    """(graph definition, parameters) of the network of `config` (the form jit-compiled code takes)."""
    return nnx.split(build(config))


def num_params(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
