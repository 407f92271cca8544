"""What a warm start can reach: `unroll.nonblind` from the true kernel, from `kernels.perturb` of it,
and the classical solver (plain and with its fallback), on a training configuration's test set.

    python -m experiments.warm_start_ceiling --flagfile=experiments/flags/camera_shake.flags \
        --test_dir=FOLDER --solver_size=31

Prints one line per image and the means (PSNR in dB against the sharp image, unaligned, as the
trainer's evaluation; the estimate's kernel MNC to the truth). Used to choose how a warm-started
network is trained (issue 29), on synthetic data only.
"""

from __future__ import annotations

from absl import app, flags

from experiments.common import (
    FLAGS,
    config_from_flags,
    define_config_flags,
    no_positional_arguments,
    run_reporting_user_errors,
)
from unroll import hostmem

define_config_flags()
flags.DEFINE_integer("solver_size", 31, "the classical solver's kernel size")
flags.DEFINE_integer("perturb_seed", 0, "seed of the perturbations")


def run(argv):
    no_positional_arguments(argv)
    import jax.numpy as jnp
    import numpy as np

    from unroll import kernels, metrics, nonblind
    from unroll.classical import blind_deconvolve, never_worse
    from unroll.train.evaluation import make_eval_set

    config = config_from_flags()
    rng = np.random.default_rng(FLAGS.perturb_seed)
    k = FLAGS.solver_size
    rows = []
    for ex in make_eval_set(config):
        g, h = np.asarray(ex["blurred"], np.float32), np.asarray(ex["kernel"])
        sharp = jnp.asarray(ex["sharp"])[None]

        def psnr(u, sharp=sharp):
            return float(metrics.psnr(jnp.clip(jnp.asarray(u, jnp.float32), 0, 1)[None], sharp)[0])

        u, he = blind_deconvolve(g, k)
        uf, _, _ = never_worse(g, np.asarray(u), np.asarray(he), k)
        row = {"input": psnr(g), "true_kernel": psnr(nonblind.deconvolve(g, h)),
               "perturbed_kernel": psnr(nonblind.deconvolve(g, kernels.perturb(h, rng))),
               "classical": psnr(u), "classical_fallback": psnr(np.asarray(uf).reshape(g.shape)),
               "classical_mnc": float(metrics.mnc(np.asarray(he), h)[0]) if he.shape == h.shape else float("nan")}
        rows.append(row)
        print(ex["name"], " ".join(f"{key} {value:.2f}" for key, value in row.items()), flush=True)
    print("mean", " ".join(f"{key} {np.nanmean([r[key] for r in rows]):.2f}" for key in rows[0]))


def main(argv):
    run_reporting_user_errors(run, argv)


if __name__ == "__main__":
    hostmem.configure()
    app.run(main)
