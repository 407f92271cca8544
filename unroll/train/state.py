"""The training state `{"params", "opt_state", "step"}` and its optimiser (Adam with the paper's
piecewise-constant schedule; a pair of Adams for a GAN)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from unroll.config import Config
from unroll.train.tasks import task_of


def split_discriminator(params):
    """(discriminator parameters, everything else) of a GAN's parameter state."""
    return nnx.split_state(params, nnx.PathContains("discriminator"), ...)


@dataclasses.dataclass(frozen=True)
class AdversarialTx:
    """One optimiser for the generator and one for the discriminator (`init` like optax's)."""
    generator: optax.GradientTransformation
    discriminator: optax.GradientTransformation

    def init(self, params):
        d_params, g_params = split_discriminator(params)
        return {"generator": self.generator.init(g_params),
                "discriminator": self.discriminator.init(d_params)}


def _adam(config: Config, schedule):
    clips = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip else []
    clip_value = task_of(config).clip_value
    clips += [optax.clip(clip_value)] if clip_value else []
    return optax.chain(*clips, optax.adam(schedule)) if clips else optax.adam(schedule)


def make_optimizer(config: Config, total_steps: int, drop_step: int):
    """(optimiser, schedule): Adam with the paper's piecewise-constant schedule (and clipping); a pair
    for GANs."""
    schedule = optax.piecewise_constant_schedule(
        config.learning_rate,
        {drop_step: config.final_learning_rate / config.learning_rate} if drop_step < total_steps else {})
    adversarial = task_of(config).adversarial
    if adversarial is None:
        return _adam(config, schedule), schedule
    ratio = adversarial.discriminator_lr_ratio
    return AdversarialTx(_adam(config, schedule),
                         _adam(config, lambda step: ratio * schedule(step))), schedule


def init_state(params, tx, mesh=None) -> dict:
    """The training state at step 0; replicated over `mesh` when one is given."""
    state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
    return state if mesh is None else jax.device_put(state, NamedSharding(mesh, P()))
