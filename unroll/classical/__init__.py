"""Classical (non-learned) blind deconvolution.

Two solvers:
  * `blind_deconvolve` / `estimate_kernel` (`unroll.classical.l0`): coarse-to-fine kernel estimation
    with an L0 gradient prior and a gradient-domain kernel step with cleanup, then the non-blind
    hyper-Laplacian step (`unroll.nonblind`). The competitive one (Levin benchmark:
    `python -m experiments.levin --method=classical`). Gray or colour images and batches
    (`unroll.classical.layout`); `check_restoration` tells without ground truth whether a
    restoration is worse than its input (`unroll.classical.check`), and `never_worse` (or
    `blind_deconvolve(..., fallback=True)`) retries smaller kernel sizes and in the end returns
    the input.
  * For a warm-started MGSTNet: `unroll.classical.warm` (h_0 from the estimate at inference) and
    `unroll.classical.bank` (real estimates made once, that training draws initial kernels from).
  * `solve` (`unroll.classical.unrolled`): MGSTNet's stages with fixed classical proximal operators
    (orthonormal Haar + GST_p), every parameter per iteration and tunable by jax.grad through the
    unrolled iterations (`unroll.classical.tuning`: `tune`, `make_training_pairs`), with the Haar
    transform of its image prior in `unroll.wavelets`.
"""

from unroll.classical.check import Verdict, check_restoration
from unroll.classical.l0 import (
                                 DEFAULTS,
                                 L0Params,
                                 blind_deconvolve,
                                 cleanup,
                                 estimate_kernel,
                                 fallback_sizes,
                                 never_worse,
)
from unroll.classical.tuning import loss, make_training_pairs, tune
from unroll.classical.unrolled import (
                                       BLIND,
                                       FINAL,
                                       KERNEL_DOMAINS,
                                       PARAM_NAMES,
                                       SHIFTS,
                                       THRESHOLDS,
                                       accelerated,
                                       constrain,
                                       default_params,
                                       image_lipschitz_bound,
                                       image_update,
                                       initial_kernel,
                                       iteration,
                                       kernel_update,
                                       objective,
                                       prior,
                                       pyramid,
                                       solve,
                                       wavelet_prox,
)
from unroll.wavelets import haar_forward, haar_inverse

__all__ = [
    "BLIND", "DEFAULTS", "FINAL", "KERNEL_DOMAINS", "L0Params", "PARAM_NAMES", "SHIFTS", "THRESHOLDS",
    "Verdict", "accelerated", "blind_deconvolve", "check_restoration", "cleanup", "constrain",
    "default_params", "estimate_kernel", "fallback_sizes", "haar_forward", "haar_inverse",
    "image_lipschitz_bound", "image_update", "initial_kernel", "iteration", "kernel_update", "loss",
    "make_training_pairs", "never_worse", "objective", "prior", "pyramid", "solve", "tune",
    "wavelet_prox",
]
