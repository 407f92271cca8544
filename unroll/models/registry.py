"""The one place that builds a network from a configuration, and reads its output.

Every model of the project has a `ModelSpec`: how to build it from a `Config`, and how to read the
restored image, the estimated kernel (None for the CNN baselines) and the intermediate images (for
the sample grids) from its output. Training adds losses on top (`unroll.train.tasks`); inference
and the studies need only this.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx

from unroll.config import Config
from unroll.models.idc import IDC
from unroll.models.madn import MADN
from unroll.models.mgstnet import MGSTNet
from unroll.models.mtwdn import MTWDN


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    build: Callable[[Config, nnx.Rngs], nnx.Module]
    image: Callable[[Any], jax.Array]  # output -> restored images [N, H, W, C]
    kernel: Callable[[Any], jax.Array | None]  # output -> estimated kernels [N, k, k] or None
    stage_images: Callable[[Any], tuple]  # output -> intermediate images, for the sample grids
    interpretable: bool = False  # every layer is a step of an optimisation algorithm (Table VI)
    estimates_kernel: bool = False


def _build_mgstnet(config: Config, rngs: nnx.Rngs) -> MGSTNet:
    return MGSTNet(stages=config.stages, scales=config.scales, kernel_rcabs=config.kernel_rcabs,
                   image_rcabs=config.image_rcabs, channels=config.channels,
                   kernel_size=config.kernel_size, features=config.features,
                   kernel_features=config.kernel_features, boundary=config.boundary,
                   threshold=config.threshold, gst_grad=config.gst_grad,
                   gst_solver=config.gst_solver,
                   kernel_prox=config.kernel_prox, remat=config.remat,
                   stage_unroll=config.stage_unroll, image_step=config.image_step, rngs=rngs)


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


def spec(config_or_name: Config | str) -> ModelSpec:
    name = config_or_name if isinstance(config_or_name, str) else config_or_name.model
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; one of {', '.join(MODELS)}")
    return MODELS[name]


def build(config: Config) -> nnx.Module:
    """The network of `config`, initialised from `config.seed`."""
    return spec(config).build(config, nnx.Rngs(config.seed))


def build_split(config: Config):
    """(graph definition, parameters) of the network of `config` (the form jit-compiled code takes)."""
    return nnx.split(build(config))


def num_params(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
