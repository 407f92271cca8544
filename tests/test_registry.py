"""Your own model in the trainer: registry.register, then validation, training, evaluation, the
comparison and unroll.load take it like a built-in model."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import unroll
from experiments import compare
from unroll import losses
from unroll.config import Config, ConfigError
from unroll.models import registry
from unroll.train import tasks

NAME = "user_sharpen"


class Sharpen(nnx.Module):
    """u = g + conv3x3(g), and one learned kernel (softmax of its logits) for every image."""

    def __init__(self, channels: int, kernel_size: int, rngs: nnx.Rngs):
        self.conv = nnx.Conv(channels, channels, (3, 3), rngs=rngs)
        self.logits = nnx.Param(jnp.zeros((kernel_size, kernel_size)))

    def __call__(self, g):
        h = jax.nn.softmax(self.logits[...].ravel()).reshape(self.logits.shape)
        return {"image": g + self.conv(g), "kernel": jnp.broadcast_to(h, (g.shape[0],) + h.shape)}


registry.register(NAME, registry.ModelSpec(
    build=lambda config, rngs: Sharpen(config.channels, config.kernel_size, rngs),
    image=lambda out: out["image"], kernel=lambda out: out["kernel"], estimates_kernel=True))

TINY = Config(model=NAME, kernel_size=5, patch_size=16, batch_size=2, steps=2, learning_rate=1e-2,
              eval_crop=24, log_every=1, save_every=2, num_samples=1)


def test_register_validates_names_and_specs():
    assert TINY.validate().model == NAME
    with pytest.raises(ConfigError, match="--model=.*register"):
        dataclasses.replace(TINY, model="not_registered").validate()
    spec = registry.spec(NAME)
    with pytest.raises(ValueError, match="built-in"):
        registry.register("mgstnet", spec)
    with pytest.raises(ValueError, match="identifier"):
        registry.register("my model", spec)
    with pytest.raises(TypeError, match="ModelSpec"):
        registry.register("mine", object())
    assert spec.stage_images({"image": 1, "kernel": 2}) == (1,)  # default: the restored image alone


def test_default_task_is_charbonnier_plus_kernel_loss():
    model = registry.build(TINY)
    sharp = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
    blurred = jnp.clip(sharp + 0.05, 0, 1)
    out = model(blurred)
    got = tasks.task_of(TINY).loss(out, {"sharp": sharp, "blurred": blurred}, TINY)
    want = (losses.charbonnier(out["image"], sharp).mean()
            + TINY.alpha * losses.kernel_loss(out["kernel"], sharp, blurred).mean())
    np.testing.assert_allclose(got, want, rtol=1e-6)
    no_kernel = dataclasses.replace(registry.spec(NAME), estimates_kernel=False)
    np.testing.assert_allclose(tasks.default_task(no_kernel).loss(out, {"sharp": sharp, "blurred": blurred}, TINY),
                               losses.charbonnier(out["image"], sharp).mean(), rtol=1e-6)


def test_registered_model_trains_compares_and_loads(tmp_path):
    rows = compare.compare(TINY, [NAME], [0.0], tmp_path)  # trains through unroll.train.train_and_evaluate
    assert rows[0]["model"] == NAME and rows[0]["step"] == TINY.steps and rows[0]["estimates_kernel"]
    assert np.isfinite(rows[0]["psnr"]) and 0 < rows[0]["kernel_mnc"] <= 1 + 1e-6
    assert f"| {NAME} | no | yes |" in (tmp_path / "compare.md").read_text()
    workdir = tmp_path / NAME / "noise=0.0"
    loaded = unroll.load(workdir)
    assert loaded.config.model == NAME and loaded.step == TINY.steps
    # Trained: the parameters moved from their initial values.
    assert not np.allclose(loaded.module.conv.kernel[...], registry.build(TINY).conv.kernel[...])
    restored, kernel = loaded.deblur(np.full((20, 24, 3), 0.5, np.float32))
    assert restored.shape == (20, 24, 3) and kernel.shape == (5, 5)
    np.testing.assert_allclose(kernel.sum(), 1, rtol=1e-5)


def test_imports_flag_registers_a_model_from_the_command_line(tmp_path, monkeypatch):
    from experiments.common import config_from_flagfile

    (tmp_path / "my_models.py").write_text(
        "from unroll.models import registry\n"
        "registry.register('from_flag', registry.spec('user_sharpen'))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "run.flags").write_text("--imports=my_models\n--model=from_flag\n--steps=1\n")
    assert config_from_flagfile(tmp_path / "run.flags").validate().model == "from_flag"
    (tmp_path / "bad.flags").write_text("--imports=no_such_module_here\n")
    with pytest.raises(ConfigError, match="--imports=no_such_module_here"):
        config_from_flagfile(tmp_path / "bad.flags")
