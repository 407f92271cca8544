"""The CNN baselines in the one trainer: MADN's alternating GAN step against a hand-written
reference, and a baseline trained, checkpointed, resumed and evaluated like MGSTNet."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from test_train import tiny_config

from unroll import losses, train
from unroll.config import Config
from unroll.models import registry


def _state(config, mesh):
    graphdef, params = registry.build_split(config)
    tx, _ = train.make_optimizer(config, 10, 10)
    state = train.init_state(params, tx, mesh)
    # The train step donates its state: keep host copies for the reference.
    return graphdef, jax.tree.map(lambda x: jnp.asarray(np.array(x)), params), tx, state


def test_madn_step_is_discriminator_then_generator_against_the_updated_discriminator():
    config = Config(model="madn", features=4, scales=1, batch_size=2, steps=10, patch_size=16,
                    kernel_size=5, learning_rate=1e-3).validate()
    mesh = train.make_mesh()
    graphdef, params, tx, state = _state(config, mesh)
    rng = np.random.default_rng(0)
    batch = {"blurred": rng.random((2, 16, 16, 3), np.float32),
             "sharp": rng.random((2, 16, 16, 3), np.float32)}
    new, metrics = train.make_train_step(graphdef, config, tx, mesh)(
        state, train.global_batch(batch, mesh))

    # Reference, written out: Adam with value clipping at 2, D at 4x the generator's rate.
    def adam(lr):
        return optax.chain(optax.clip(2.0), optax.adam(lr))

    d0, g0 = train.split_discriminator(params)
    sharp, blurred = jnp.asarray(batch["sharp"]), jnp.asarray(batch["blurred"])
    model = lambda g, d: nnx.merge(graphdef, nnx.merge_state(g, d))  # noqa: E731
    fake = jax.jit(lambda g, d: model(g, d)(blurred))(g0, d0)

    def d_loss(d):
        m = model(g0, d)
        return losses.madn_discriminator_loss(m.real_logits(sharp), m.fake_logits(fake))

    dl, dg = jax.jit(jax.value_and_grad(d_loss))(d0)  # jit: eager MADN is slow
    upd, _ = adam(4e-3).update(dg, adam(4e-3).init(d0), d0)
    d1 = optax.apply_updates(d0, upd)

    def g_loss(g):
        m = model(g, d1)
        o = m(blurred)
        return losses.madn_generator_loss(o, sharp, m.fake_logits(o))

    gl, gg = jax.jit(jax.value_and_grad(g_loss))(g0)
    upd, _ = adam(1e-3).update(gg, adam(1e-3).init(g0), g0)
    g1 = optax.apply_updates(g0, upd)

    np.testing.assert_allclose(float(metrics["discriminator_loss"]), float(dl), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss"]), float(gl), rtol=1e-5)
    got_d, got_g = train.split_discriminator(new["params"])
    for want, got in ((d1, got_d), (g1, got_g)):
        for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
            # Adam's first step moves each weight by about +-lr (1e-3, 4e-3); a weight whose gradient
            # is near Adam's eps can differ by more than rounding between sharded and plain sums.
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-4)
    # Both networks moved.
    for before, after in ((d0, got_d), (g0, got_g)):
        assert max(float(jnp.abs(a - b).max()) for a, b in
                   zip(jax.tree.leaves(before), jax.tree.leaves(after))) > 0


@pytest.mark.parametrize("model", ["madn", "mtwdn"])
def test_baseline_trains_resumes_and_evaluates(tmp_path, model):
    config = tiny_config(model=model, features=4, scales=1, steps=2, save_every=2)
    results = train.train_and_evaluate(config, tmp_path)
    assert results["model"] == model and results["step"] == 2
    assert np.isfinite(results["psnr"]) and results["kernel_mnc"] is None
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["num_params"] == results["num_params"] > 1000
    assert (tmp_path / "eval" / "psnr_boxplot.png").exists()
    # Resume (optimiser state of both networks restored) for one more step.
    again = train.train_and_evaluate(tiny_config(model=model, features=4, scales=1, steps=3,
                                                 save_every=3), tmp_path)
    assert again["step"] == 3
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    if model == "madn":
        assert any("discriminator_loss" in x for x in lines)
