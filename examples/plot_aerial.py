"""
Deblur a scene with the shipped ``aerial`` model
================================================

``unroll.load("aerial")`` is MGSTNet trained on the RSSCN7 aerial scenes with Gaussian blur
(sigma 1-4), noise std 0 to 0.025 and scenes of every contrast. Here it restores a photograph bundled with scikit-image,
blurred the same way, and estimates the blur kernel: no training, no download.
"""

import matplotlib.pyplot as plt
import numpy as np
from skimage import data

import unroll
from unroll import kernels, metrics, ops

# A 192x192 crop of a built-in photograph, blurred by a 15x15 Gaussian (sigma 2) plus noise 1e-3.
sharp = data.chelsea()[40:232, 100:292].astype(np.float32) / 255
true_kernel = kernels.gaussian(15, 2.0)
blurred = np.asarray(ops.blur(sharp[None], true_kernel[None]))[0]
blurred = np.clip(blurred + np.random.default_rng(0).normal(0, 1e-3, blurred.shape), 0, 1)

model = unroll.load("aerial")
restored, kernel = model.deblur(blurred.astype(np.float32))

psnr_in = float(metrics.psnr(blurred[None], sharp[None])[0])
psnr_out = float(metrics.psnr(np.clip(restored, 0, 1)[None], sharp[None])[0])
print(f"PSNR: blurred {psnr_in:.2f} dB, restored {psnr_out:.2f} dB; "
      f"kernel MNC {float(metrics.mnc(kernel[None], true_kernel[None])[0]):.3f}")

fig, axes = plt.subplots(1, 4, figsize=(11, 3.2), width_ratios=[1, 1, 1, 0.55])
for ax, image, title in zip(axes, (blurred, np.clip(restored, 0, 1), sharp),
                            (f"blurred ({psnr_in:.1f} dB)", f"restored ({psnr_out:.1f} dB)", "sharp")):
    ax.imshow(image)
    ax.set_title(title)
axes[3].imshow(np.concatenate([kernel, true_kernel], axis=0), cmap="magma")
axes[3].set_title("kernel: estimated\nabove true", fontsize=9)
for ax in axes:
    ax.set_axis_off()
fig.tight_layout()

# %%
# The README's before/after picture is this one, at a small size.
fig, axes = plt.subplots(1, 2, figsize=(4.4, 2.45))
for ax, image, title in zip(axes, (blurred, np.clip(restored, 0, 1)), ("blurred", "unroll.load('aerial')")):
    ax.imshow(image)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
fig.tight_layout(pad=0.8)
plt.show()
