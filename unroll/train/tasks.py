"""What training adds to a model of the registry: its loss, and for a GAN (MADN) its adversarial part.

A model registered without a task here (`task_of`) trains with the Charbonnier loss of its restored
image (eq. 22) plus alpha times the kernel loss (eq. 23) of its kernel when its spec estimates one;
`TASKS[name] = Task(...)` gives it its own.

MADN (papers/madn.txt, Section 5.1): Adam 1e-4 for G and 4e-4 for D, gradients clipped at 2; its
`loss` is the content part of eq. (10) alone (no discriminator), for studies outside the GAN step.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from unroll import losses
from unroll.config import Config
from unroll.models import registry


@dataclasses.dataclass(frozen=True)
class Adversarial:
    """The GAN part of a task: the discriminator's logits on real and generated data (the model's
    methods decide what is judged, e.g. images and gradient maps), the two losses, and the
    discriminator's learning rate as a multiple of the generator's (`Config.learning_rate`)."""
    real_logits: Callable[[nnx.Module, dict], Any]  # (model, batch) -> D(real)
    fake_logits: Callable[[nnx.Module, Any], Any]  # (model, output) -> D(fake)
    generator_loss: Callable[[Any, dict, Any, Config], jax.Array]  # (out, batch, D(fake), config)
    discriminator_loss: Callable[[Any, Any], jax.Array]  # (D(real), D(fake))
    discriminator_lr_ratio: float = 1.0


@dataclasses.dataclass(frozen=True)
class Task:
    loss: Callable[[Any, dict, Config], jax.Array]  # (model output, batch, config) -> scalar
    adversarial: Adversarial | None = None
    clip_value: float = 0.0  # the paper's elementwise gradient clipping (0: none)


TASKS: dict[str, Task] = {
    "mgstnet": Task(loss=lambda out, batch, c: losses.mgstnet_loss(
        out, batch["sharp"], batch["blurred"], alpha=c.alpha, boundary=c.boundary)),
    "madn": Task(
        loss=lambda out, batch, c: losses.madn_generator_loss(out, batch["sharp"], ()),
        adversarial=Adversarial(
            real_logits=lambda model, batch: model.real_logits(batch["sharp"]),
            fake_logits=lambda model, out: model.fake_logits(out),
            generator_loss=lambda out, batch, d_fake, c: losses.madn_generator_loss(
                out, batch["sharp"], d_fake),
            discriminator_loss=losses.madn_discriminator_loss,
            discriminator_lr_ratio=4.0),
        clip_value=2.0),
    "idc": Task(loss=lambda out, batch, c: losses.idc_loss(out, batch["sharp"])),
    "mtwdn": Task(loss=lambda out, batch, c: losses.mtwdn_loss(out, batch["sharp"])),
}


def default_task(spec: registry.ModelSpec) -> Task:
    """Charbonnier on `spec.image(out)`, plus `config.alpha` x the kernel loss on `spec.kernel(out)`
    when `spec.estimates_kernel` (batch means)."""
    def loss(out, batch, c: Config):
        value = jnp.mean(losses.charbonnier(spec.image(out), batch["sharp"]))
        if spec.estimates_kernel:
            value += c.alpha * jnp.mean(
                losses.kernel_loss(spec.kernel(out), batch["sharp"], batch["blurred"], c.boundary))
        return value
    return Task(loss=loss)


def task_of(config: Config) -> Task:
    """The task of `config.model`: its own in TASKS, else `default_task` of its registry spec."""
    return TASKS.get(config.model) or default_task(registry.spec(config))
