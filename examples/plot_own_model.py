"""
A model of one's own, trained and scored like the built-in ones
===============================================================

A researcher's network enters the project's trainer through the model registry:
``unroll.models.registry.register(name, ModelSpec(...))`` says how to build it from a ``Config`` and
how to read the restored image (and, if it has one, the estimated kernel) from its output. Then
``Config(model=name)`` validates, ``unroll.train.train_and_evaluate`` trains, evaluates and
checkpoints it (with the Charbonnier image loss, plus the kernel loss when the spec estimates
kernels), ``experiments.compare --models=name`` compares it with the others and ``unroll.load``
loads it. Here: a two-layer residual CNN, trained for a few steps on the built-in photographs.
"""

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from absl import logging
from flax import nnx

import unroll
from unroll import data
from unroll.config import Config
from unroll.models import registry
from unroll.train import train_and_evaluate

logging.set_verbosity(logging.WARNING)


class Residual(nnx.Module):
    """u = g + conv3x3(relu(conv3x3(g))): a tiny residual deblurring CNN."""

    def __init__(self, channels: int, features: int, rngs: nnx.Rngs):
        self.first = nnx.Conv(channels, features, (3, 3), rngs=rngs)
        self.last = nnx.Conv(features, channels, (3, 3), rngs=rngs)

    def __call__(self, g):
        return g + self.last(nnx.relu(self.first(g)))


registry.register("residual_cnn", registry.ModelSpec(
    build=lambda config, rngs: Residual(config.channels, config.features, rngs),
    image=lambda out: out))

workdir = Path(tempfile.mkdtemp()) / "residual_cnn"
config = Config(model="residual_cnn", features=16, kernel_size=9, patch_size=32, batch_size=4,
                steps=200, learning_rate=3e-3, final_learning_rate=3e-4, final_lr_steps=50,
                sigma_min=1.0, sigma_max=2.0, eval_crop=64, log_every=100, save_every=200, num_samples=0)
scores = train_and_evaluate(config, workdir)
print(f"PSNR {scores['psnr']:.2f} dB against {scores['psnr_input']:.2f} dB for the blurred input")

# %%
# ``unroll.load`` reads it back like any trained model, and ``deblur`` restores an image.
model = unroll.load(workdir)
example = data.make_eval_dataset(kernel_size=9, sigma_range=(1.0, 2.0), center_crop=96)[0]
restored, _ = model.deblur(example["blurred"])
fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
for ax, image, title in zip(axes, (example["blurred"], restored, example["sharp"]),
                            ("blurred", "residual_cnn", "sharp")):
    ax.imshow(np.clip(image, 0, 1))
    ax.set_title(title)
    ax.axis("off")
fig.tight_layout()
plt.show()
