"""
Differentiate through the unrolled stages
=========================================

Every stage of MGSTNet thresholds its image features with GST_p, whose threshold ``theta`` and
exponent ``p`` are learned per stage and scale. ``jax.grad`` reaches them through the whole
unrolled network: here the hypergradient of the output's PSNR with respect to each of them, for the
shipped ``aerial`` model on one blurred crop. The parameters are stored unconstrained (``theta``
through a softplus, ``p`` through a sigmoid); ``unroll.studies.scalar_gradients`` applies the chain
rule that maps their gradients to ``theta`` and ``p`` themselves.
"""

import jax
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx
from skimage import data

import unroll
from unroll import kernels, metrics, ops, studies

model = unroll.load("aerial")
sharp = data.coffee()[100:164, 200:264].astype(np.float32)[None] / 255
blurred = ops.blur(sharp, kernels.gaussian(15, 2.5)[None])


def output_psnr(params):
    """PSNR of the last stage's image: a function of every parameter of every stage."""
    network = nnx.merge(model.graphdef, params)
    return metrics.psnr(network(blurred).images[-1], sharp)[0]


psnr, param_grads = jax.value_and_grad(output_psnr)(model.params)
print(f"PSNR of the output {float(psnr):.2f} dB")
values = studies.scalar_values(model.graphdef, model.params)
grads = studies.scalar_gradients(model.graphdef, model.params, param_grads)

stages, scales = np.shape(values["image_theta"])
fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
width = 0.8 / scales
for ax, name in zip(axes, ("image_theta", "image_p")):
    g = np.asarray(grads[name])
    for s in range(scales):
        ax.bar(np.arange(stages) + s * width, g[:, s], width, label=f"scale {s}")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(np.arange(stages) + width * (scales - 1) / 2, [f"stage {k + 1}" for k in range(stages)])
    ax.set_title(f"dPSNR / d{name.split('_')[1]}  (dB per unit)")
axes[0].legend()
fig.tight_layout()
for name in ("image_theta", "image_p"):
    print(name, "=", np.round(np.asarray(values[name]), 4).tolist(),
          " dPSNR/d =", np.round(np.asarray(grads[name]), 3).tolist())
plt.show()
