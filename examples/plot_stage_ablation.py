"""
How many stages? An ablation on a tiny run
==========================================

The paper's Table I varies the number of unrolled stages K. ``python -m experiments.ablate
--sweep=stages --values=1,2,3`` does it at full size; this is the same question at a size that
trains in seconds on a CPU: a narrow MGSTNet with K = 1, 2, 3 trained by the project's trainer
(``unroll.train.train_and_evaluate``) for the same few steps on crops of the built-in photographs,
then scored on the built-in test photographs. With so little training the differences are small
and noisy; the point is the recipe (and each stage's output, drawn afterwards).
"""

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from absl import logging

from unroll.config import Config
from unroll.inference.model import load
from unroll.train import train_and_evaluate

logging.set_verbosity(logging.WARNING)  # the checkpointer reports every save at INFO
workdirs = Path(tempfile.mkdtemp())
stage_counts = (1, 2, 3)
scores = {}
for k in stage_counts:
    config = Config(stages=k, scales=1, kernel_rcabs=0, image_rcabs=1, features=8, kernel_features=4,
                    kernel_size=9, patch_size=32, batch_size=4, steps=80, learning_rate=2e-3,
                    final_learning_rate=2e-4, final_lr_steps=20, sigma_min=1.0, sigma_max=2.0,
                    eval_crop=64, log_every=40, save_every=80, num_samples=0)
    scores[k] = train_and_evaluate(config, workdirs / f"stages_{k}")
    print(f"K = {k}: PSNR {scores[k]['psnr']:.2f} dB (blurred input {scores[k]['psnr_input']:.2f}), "
          f"{scores[k]['num_params']} parameters")

# %%
# PSNR on the test photographs against K, and the intermediate images u_k of the three-stage run.
from unroll import data  # noqa: E402

example = data.make_eval_dataset(kernel_size=9, sigma_range=(1.0, 2.0), center_crop=64)[0]
out = load(workdirs / "stages_3")(example["blurred"][None])

fig, axes = plt.subplots(1, 5, figsize=(12, 2.8), width_ratios=[1.6, 1, 1, 1, 1])
axes[0].plot(stage_counts, [scores[k]["psnr"] for k in stage_counts], "o-", label="restored")
axes[0].plot(stage_counts, [scores[k]["psnr_input"] for k in stage_counts], "k--", label="blurred")
axes[0].set_xticks(stage_counts)
axes[0].set_xlabel("stages K")
axes[0].set_ylabel("PSNR (dB)")
axes[0].legend(fontsize=8)
panels = [(example["blurred"], "g (blurred)")] + [(out.images[k, 0], f"u_{k + 1}") for k in range(3)]
for ax, (image, title) in zip(axes[1:], panels):
    ax.imshow(np.clip(np.asarray(image), 0, 1))
    ax.set_title(title)
    ax.set_axis_off()
fig.tight_layout()
plt.show()
