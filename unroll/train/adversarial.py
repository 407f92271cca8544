"""The GAN train step (MADN): the discriminator on (real, generated), then the generator against the
updated discriminator, each with its own Adam."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from unroll.config import Config
from unroll.train.state import AdversarialTx, split_discriminator
from unroll.train.steps import compute, float32
from unroll.train.tasks import Adversarial


def adversarial_step(graphdef, config: Config, tx: AdversarialTx, adversarial: Adversarial):
    """`(state, batch) -> (state, metrics)`, not yet jitted. The generator runs forward once: its vjp
    is kept for the second update."""

    def judge(g_params, d_params, logits_fn, x):
        params = nnx.merge_state(g_params, d_params)
        if config.bf16:
            params, x = jax.tree.map(lambda a: a.astype(jnp.bfloat16), (params, x))
        return float32(logits_fn(nnx.merge(graphdef, params), x))

    def train_step(state, batch):
        d_params, g_params = split_discriminator(state["params"])

        def generate(g):
            model, inputs = compute(graphdef, nnx.merge_state(g, d_params), batch["blurred"], config)
            return float32(model(inputs))

        out, pullback = jax.vjp(generate, g_params)
        fake = jax.lax.stop_gradient(out)

        def d_loss_fn(d):
            return adversarial.discriminator_loss(judge(g_params, d, adversarial.real_logits, batch),
                                                  judge(g_params, d, adversarial.fake_logits, fake))

        d_loss, d_grads = jax.value_and_grad(d_loss_fn)(d_params)
        d_updates, d_opt = tx.discriminator.update(d_grads, state["opt_state"]["discriminator"], d_params)
        d_params = optax.apply_updates(d_params, d_updates)

        def g_loss_fn(out):
            d_fake = judge(g_params, d_params, adversarial.fake_logits, out)
            return adversarial.generator_loss(out, batch, d_fake, config)

        g_loss, out_grads = jax.value_and_grad(g_loss_fn)(out)
        (g_grads,) = pullback(out_grads)
        g_updates, g_opt = tx.generator.update(g_grads, state["opt_state"]["generator"], g_params)
        g_params = optax.apply_updates(g_params, g_updates)
        metrics = {"loss": g_loss, "discriminator_loss": d_loss, "grad_norm": optax.tree.norm(g_grads)}
        return {"params": nnx.merge_state(g_params, d_params),
                "opt_state": {"generator": g_opt, "discriminator": d_opt},
                "step": state["step"] + 1}, metrics

    return train_step
