"""Write a trained workdir's final checkpoint into the package as a shipped model, with its card.

    python -m experiments.export_pretrained --workdir=runs/aerial --name=aerial \
        --command="python -m experiments.mgstnet --flagfile=experiments/flags/rsscn7.flags ..." \
        --train_minutes=63

Writes `unroll/pretrained/<name>/`: config.json, params.npz (float32), metrics.json (the final
evaluation's scores), MODEL_CARD.md (what it was trained on, how, for how long, and its scores) and
SHA256SUMS (each file's SHA-256, checked by `unroll.load(name)`); every file is written atomically.
"""

from __future__ import annotations

from absl import app, flags

from experiments.common import FLAGS, no_positional_arguments, run_reporting_user_errors
from unroll import hostmem, pretrained

flags.DEFINE_string("workdir", None, "trained workdir to export")
flags.DEFINE_enum("name", None, ["aerial", "motion"], "name of the shipped model")
flags.DEFINE_string("command", "", "the command that trained it (for the card)")
flags.DEFINE_float("train_minutes", 0.0, "its training time on the machine below (for the card)")
flags.DEFINE_string("limits", "", "known failures measured on data beside the test set (for the card)")
flags.DEFINE_string("scores", "", "further scores measured beside the test split, markdown, each with its "
                    "command (for the card), e.g. Levin et al. 2009")
flags.DEFINE_string("machine", "2-core CPU (no GPU), JAX on XLA:CPU", "where it was trained")
flags.mark_flags_as_required(["workdir", "name"])

PURPOSE = {
    "aerial": "Blind deblurring of aerial and satellite RGB scenes blurred by a roughly Gaussian "
              "point-spread function (defocus, atmosphere, optics), with the noise of real sensors and "
              "compressed images (std up to about 0.02 of the range): the MGSTNet paper's AIRS(+) "
              "setting on the RSSCN7 scenes, trained over a range of noise levels.",
    "motion": "Blind deblurring of camera shake (motion blur up to about 30 px) and mild Gaussian blur "
              "in RGB or gray photographs, warm-started from the classical blind solver's kernel.",
}
DATA = {
    "aerial": "RSSCN7 (Zou et al., IEEE GRSL 2015), `train/`: 560 Google Earth scenes of 400x400 px in "
              "7 classes (grass, field, industry, river_lake, forest, residential, parking); research "
              "use only. Tested on the 140 scenes of `test/`, never seen in training.",
    "motion": "The built-in photographs (scikit-image's train split: 10 photos) and RSSCN7's `train/` "
              "(560 aerial scenes); 30 % of the crops made gray. Tested on RSSCN7's `test/` split and "
              "on Levin et al. 2009, never seen in training.",
}


def pipeline(config) -> list[str]:
    """The card's section on a warm-started network's pipeline (none for the paper's start)."""
    if config.kernel_init != "classical":
        return []
    start = ("u_0 is the input restored with that kernel (`unroll.nonblind`) where the restoration "
             "passes the no-reference check (`unroll.classical.check`, in-graph `unroll.verdict`), the "
             "input itself where it does not"
             if config.image_init == "nonblind" else "u_0 is the input")
    train = (f"a bank of {config.kernel_bank} pairs (true kernel, the estimator's estimate of it) made "
             "once on training crops blurred by the same mix (`unroll.classical.bank`)"
             if config.kernel_bank else "perturbed true kernels (`unroll.kernels.perturb`)")
    return ["## Pipeline\n",
            "Each image: the classical blind solver estimates the kernel from the luminance "
            f"(`unroll.classical.estimate_kernel`, {config.kernel_size}x{config.kernel_size}; an estimate "
            "whose restoration fails the check is retried in a window 1.5x as large and cropped back, "
            f"`unroll.classical.warm.initial_state`); that is h_0, and {start}; then the network's "
            "stages. In training the initial kernels come from "
            f"{train}.\n"]


def card(name: str, config, metrics: dict, command: str, minutes: float, machine: str,
         limits: str = "", scores: str = "") -> str:
    kinds = [f"`unroll.kernels.{kind}` with probability {p}" for kind, p in
             (("motion", config.motion_prob), ("shake", config.shake_prob)) if p]
    blur = (f"Random camera-shake kernels ({', '.join(kinds)}; extent up to {config.kernel_size - 1} px), "
            "else isotropic Gaussians" if kinds else "Isotropic Gaussians")
    noise = (f"white Gaussian noise, std drawn per image in [{config.noise}, {config.noise_max}]"
             if config.noise_max else f"white Gaussian noise, std {config.noise}")
    if config.noise_max and config.noise_power != 1:
        noise += (f" as {config.noise} + {config.noise_max - config.noise:g} U^{config.noise_power:g}, "
                  f"U uniform in [0, 1] (more low noise: half the draws below "
                  f"{config.noise + (config.noise_max - config.noise) * 0.5 ** config.noise_power:.4g})")
    if config.quantize:
        noise += ", then 8-bit quantisation"
    lines = [
        f"# Model card: `{name}`\n",
        PURPOSE[name] + "\n",
        f"Load it with `unroll.load(\"{name}\")` or `--pretrained={name}`.\n",
        "## Network\n",
        f"MGSTNet, {config.stages} stages, {config.scales} scales, width {config.features} (kernel prior "
        f"{config.kernel_features}), {config.kernel_rcabs} / {config.image_rcabs} RCABs, "
        f"{config.kernel_size}x{config.kernel_size} kernel, {config.channels} channels, GST_p shrinkage; "
        f"{metrics.get('num_params', 0):,} parameters (float32).\n",
        *pipeline(config),
        "## Training data\n", DATA[name] + "\n",
        "## Degradation\n",
        f"{blur} (sigma in [{config.sigma_min}, {config.sigma_max}]), {config.kernel_size}x"
        f"{config.kernel_size}, symmetric boundary; {noise}. Random {config.patch_size}x"
        f"{config.patch_size} crops, flips and rotations"
        + (f"; each crop's contrast scaled about its mean by a factor drawn in [{config.contrast_min:g}, 1] "
           "(faint scenes: haze, low sun, smooth surfaces), the target too" if config.contrast_min < 1 else "")
        + ".\n",
        "## Command and budget\n",
        f"```\n{command}\n```\n" if command else "",
        (f"Fine-tuned from earlier weights (`--init_from={config.init_from}`; the commands above give "
         "both stages): " if config.init_from else "")
        + f"{config.steps} steps of batch {config.batch_size}, Adam {config.learning_rate} then "
        f"{config.final_learning_rate} for the last {config.final_lr_steps}, kernel-loss weight "
        f"{config.alpha}, seed {config.seed}"
        + (f"; {minutes:.0f} minutes on a {machine}" if minutes else "") + ".\n",
        "## Test scores\n",
        f"On `{metrics.get('test_dir') or 'the built-in test photographs'}`"
        + (f", {config.eval_crop}x{config.eval_crop} centre crops" if config.eval_crop else ", whole images")
        + f", {metrics.get('num_images')} images, each blurred once with a fixed seed as in training "
        f"(noise {config.noise}):\n",
        "| | PSNR (dB) | SSIM | RMSE (0-255) | kernel MNC |",
        "|---|---|---|---|---|",
        f"| blurred input | {metrics['psnr_input']:.2f} | {metrics['ssim_input']:.4f} | "
        f"{metrics['rmse_input']:.2f} | - |",
        f"| `{name}` | {metrics['psnr']:.2f} | {metrics['ssim']:.4f} | {metrics['rmse']:.2f} | "
        f"{metrics['kernel_mnc']:.4f} |\n",
    ]
    if metrics.get("per_class"):
        lines += ["PSNR per class: " + ", ".join(f"{c} {m['psnr']:.2f}" for c, m in
                                                metrics["per_class"].items()) + ".\n"]
    if metrics.get("noise_levels"):
        lines += pretrained.noise_section(metrics["noise_levels"])
    if scores:
        lines += ["## Further scores\n", scores.strip() + "\n"]
    high = max(config.noise, config.noise_max)
    lines += ["## Limits\n",
              "Trained on a small budget on a CPU; a GPU run of the paper's configuration "
              "(`experiments/flags/airs.flags`) is larger and stronger. Blur outside the training "
              f"range (other kernel shapes, larger extents, noise std above {high:g}) is not covered; "
              "the CLI's deblur warns when an input's estimated noise lies outside it.\n"]
    if limits:
        lines += [limits.strip() + "\n"]
    return "\n".join(lines)


def run(argv):
    no_positional_arguments(argv)

    folder = pretrained.export(FLAGS.workdir, FLAGS.name, card=lambda config, metrics: card(
        FLAGS.name, config, metrics, FLAGS.command, FLAGS.train_minutes, FLAGS.machine, FLAGS.limits,
        FLAGS.scores))
    size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    print(f"wrote {folder} ({size:.2f} MB)")


def main(argv):
    run_reporting_user_errors(run, argv)


if __name__ == "__main__":
    hostmem.configure()  # reuse XLA:CPU's per-step buffers (unroll/hostmem.py)
    app.run(main)
