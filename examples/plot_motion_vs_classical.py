"""
Camera shake: the ``motion`` network beside the classical solver
================================================================

A gray photograph blurred by a random camera-shake kernel (``unroll.kernels.motion``), restored by
the shipped ``motion`` model (the classical solver's 31x31 kernel estimate as a warm start, then the
network's stages; a gray image goes through the RGB network and comes back gray) and by the
classical blind solver alone (``unroll.classical.blind_deconvolve``: an L0 gradient prior for the
kernel, coarse to fine, then non-blind deconvolution), told the kernel size.
"""

import time

import matplotlib.pyplot as plt
import numpy as np
from skimage import data

import unroll
from unroll import kernels, metrics, ops
from unroll.classical import blind_deconvolve

sharp = data.camera()[90:218, 170:298].astype(np.float32) / 255
true_kernel = kernels.motion(15, np.random.default_rng(2))
blurred = np.asarray(ops.blur(sharp[None, :, :, None], true_kernel[None]))[0, :, :, 0]

t0 = time.perf_counter()
net, net_kernel = unroll.load("motion").deblur(blurred)
t1 = time.perf_counter()
classical, classical_kernel = blind_deconvolve(blurred, kernel_size=15)
classical, classical_kernel = np.asarray(classical), np.asarray(classical_kernel)
t2 = time.perf_counter()


def psnr(u):
    return float(metrics.psnr(np.clip(u, 0, 1)[None, :, :, None], sharp[None, :, :, None])[0])


def mnc(h):
    return float(metrics.mnc(h[None], true_kernel[None])[0])


print(f"motion network: {psnr(net):.2f} dB, kernel MNC {mnc(net_kernel):.3f}, {t1 - t0:.1f} s "
      f"(compilation included); classical: {psnr(classical):.2f} dB, MNC {mnc(classical_kernel):.3f}, "
      f"{t2 - t1:.1f} s; blurred input {psnr(blurred):.2f} dB")

fig, axes = plt.subplots(2, 4, figsize=(11, 5.6), height_ratios=[1, 0.45])
rows = [(blurred, true_kernel, "blurred / true kernel"), (net, net_kernel, f"motion: {psnr(net):.1f} dB"),
        (classical, classical_kernel, f"classical: {psnr(classical):.1f} dB"), (sharp, None, "sharp")]
for j, (image, kernel, title) in enumerate(rows):
    axes[0, j].imshow(np.clip(image, 0, 1), cmap="gray", vmin=0, vmax=1)
    axes[0, j].set_title(title, fontsize=10)
    if kernel is not None:
        axes[1, j].imshow(kernel, cmap="magma")
for ax in axes.ravel():
    ax.set_axis_off()
fig.tight_layout()
plt.show()
