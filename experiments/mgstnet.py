"""Train, evaluate and deblur with MGSTNet (or a CNN baseline: --model=madn|idc|mtwdn).

    python -m experiments.mgstnet --flagfile=experiments/flags/demo.flags --workdir=/tmp/demo
    python -m experiments.mgstnet --workdir=DIR --mode=eval
    python -m experiments.mgstnet --workdir=DIR --mode=deblur --input=photo.png,folder/
    python -m experiments.mgstnet --pretrained=aerial --mode=deblur --input=scene.tif --output_dir=out/
    python -m experiments.mgstnet --workdir=DIR --mode=eval --noise_levels=0,0.005,0.01,0.02

`train` resumes from DIR's newest checkpoint when there is one and ends with an evaluation.
`eval` evaluates DIR's checkpoint and `deblur` writes deblurred images and estimated kernels; both
read the network's configuration from the checkpoint, so they need no flagfile (flags given
explicitly still apply, and one that contradicts the checkpoint's network is refused).
`--pretrained=aerial|motion` uses a model shipped with the package instead of a workdir (eval prints
its table, and writes its report only where --workdir is given; deblur writes to --output_dir,
default ./deblurred).
Deblur prints one line per input with its noise std (estimated, or --image_noise) and a warning when
it lies outside the model's training range (--noise to --noise_max); a noise-conditional model gets
it as its input. Eval with --noise_levels also scores the test set at each of those noise stds (the
same blurred scenes otherwise) and writes the table to DIR/eval/noise_levels.{json,md}.
Every field of `unroll.config.Config` is a flag of the same name.

Several processes (hosts, GPUs): run the same command on each with --coordinator_address,
--num_processes and --process_id, or with --distributed under SLURM / Open MPI / a TPU slice
(see unroll/train/distributed.py and the README).
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags

from experiments.common import (
    FLAGS,
    config_from_flags,
    define_config_flags,
    define_workdir_flag,
    no_positional_arguments,
    run_reporting_user_errors,
)
from unroll import hostmem
from unroll.config import ConfigError

define_config_flags()
define_workdir_flag("workdir", "directory for checkpoints, logs, metrics and pictures")
flags.DEFINE_enum("mode", "train", ["train", "eval", "deblur"], "what to do")
flags.DEFINE_string("pretrained", "", "eval/deblur: a model shipped with the package (aerial, motion) "
                    "instead of a workdir's checkpoint")
flags.DEFINE_enum("checkpoint", "latest", ["latest", "best"], "eval/deblur: which checkpoint")
flags.DEFINE_list("input", [], "deblur: image files, folders or glob patterns")
flags.DEFINE_string("output_dir", "", "deblur: output folder (default WORKDIR/deblurred)")
flags.DEFINE_bool("overwrite", False, "deblur: replace existing output files")
flags.DEFINE_integer("tile_size", 0, "deblur: process in overlapping tiles of this size (0: whole "
                     "images); each tile estimates its own kernel")
flags.DEFINE_integer("tile_overlap", 32, "deblur: overlap between neighbouring tiles, pixels")
flags.DEFINE_bool("global_kernel", False, "deblur with tiles: one kernel for the whole scene, "
                  "estimated on its most textured tiles")
flags.DEFINE_float("image_noise", -1.0, "deblur: the inputs' noise std on the [0, 1] scale (-1: "
                   "estimated per input); a noise-conditional model gets it, and every input's line "
                   "warns when it lies outside the model's training range (--noise is that range)")
if "noise_levels" not in FLAGS:  # experiments.compare has its own (read here only when given)
    flags.DEFINE_list("noise_levels", [], "eval: also evaluate at each of these noise stds (e.g. "
                      "0,0.005,0.01), the same blurred images otherwise; writes "
                      "eval/noise_levels.{json,md}")
flags.DEFINE_bool("distributed", False,
                  "multi-process run: jax.distributed.initialize() with cluster auto-detection")
flags.DEFINE_string("coordinator_address", "", "multi-process run: HOST:PORT of process 0")
flags.DEFINE_integer("num_processes", 0, "multi-process run: number of processes")
flags.DEFINE_integer("process_id", -1, "multi-process run: this process's index")
flags.DEFINE_integer("cpu_devices", 0, "simulate this many CPU devices per process (testing)")


def _checkpoint_config(workdir: Path):
    """The configuration stored in `workdir`'s checkpoint, with the flags given explicitly on top,
    refused where they contradict the saved network."""
    from unroll.checkpoint import CheckpointError, Checkpoints

    with Checkpoints(workdir) as checkpoints:
        saved = checkpoints.saved_config(FLAGS.checkpoint)
        if saved is None:
            raise CheckpointError(f"no {FLAGS.checkpoint} checkpoint in {workdir}: train there "
                                  "first (--mode=train)")
        _refuse_training_noise(saved)
        config = config_from_flags(base=saved).validate()
        checkpoints.check_compatible(config, FLAGS.checkpoint)
    return config


def _pretrained_config():
    """The shipped model's configuration with the explicit flags on top (none may change its network)."""
    from unroll import pretrained

    saved = pretrained.load_config(FLAGS.pretrained)
    _refuse_training_noise(saved)
    config = config_from_flags(base=saved).validate()
    changed = [k for k, v in saved.model_signature().items() if config.model_signature()[k] != v]
    if changed or config.model != saved.model:
        name = (changed or ["model"])[0]
        raise ConfigError(f"--{name}={getattr(config, name)!r} does not fit the pretrained model "
                          f"{FLAGS.pretrained!r} ({name}={getattr(saved, name)!r})")
    return config


def _noise_levels() -> list[float]:
    """--noise_levels as floats (empty unless given), each a finite std >= 0."""
    if not FLAGS["noise_levels"].present:
        return []
    if FLAGS.mode != "eval":
        raise ConfigError("--noise_levels is for --mode=eval")
    try:
        levels = [float(level) for level in FLAGS.noise_levels]
    except ValueError:
        raise ConfigError(f"--noise_levels={','.join(FLAGS.noise_levels)}: expected numbers, e.g. "
                          "--noise_levels=0,0.005,0.01") from None
    bad = [level for level in levels if not 0 <= level < float("inf")]
    if bad or not levels:
        raise ConfigError(f"--noise_levels={','.join(FLAGS.noise_levels)}: each must be a noise std "
                          ">= 0 on the [0, 1] scale")
    return levels


def _refuse_training_noise(saved):
    """In deblur mode, --noise / --noise_max that differ from the model's are a user mistaking them
    for the inputs' noise: say so (before validating them against each other, whose message would
    not name --image_noise)."""
    if FLAGS.mode != "deblur":
        return
    for name in ("noise", "noise_max"):
        if FLAGS[name].present and FLAGS[name].value != getattr(saved, name):
            raise ConfigError(f"--{name}={FLAGS[name].value} is the noise the model was trained "
                              f"with ({getattr(saved, name)}); give the inputs' noise std as "
                              "--image_noise")


def _image_noise() -> float | None:
    """--image_noise for deblur (None: estimate per input). (--noise and --noise_max describe the
    training data: `_refuse_training_noise` keeps them at the model's.)"""
    if FLAGS.image_noise == -1:
        return None
    if not 0 <= FLAGS.image_noise < float("inf"):
        raise ConfigError(f"--image_noise={FLAGS.image_noise}: must be a noise std >= 0 on the "
                          "[0, 1] scale, or -1 to estimate it per input")
    return FLAGS.image_noise


def run(argv):
    no_positional_arguments(argv)
    levels = _noise_levels()
    if FLAGS.pretrained and FLAGS.mode == "train":
        raise ConfigError("--pretrained is for --mode=eval or --mode=deblur (training starts from a "
                          "fresh network in --workdir)")
    if FLAGS.pretrained:
        _run_pretrained(levels)
        return
    if FLAGS.mode == "train":
        config = config_from_flags().validate()
    import jax

    if FLAGS.cpu_devices:
        jax.config.update("jax_num_cpu_devices", FLAGS.cpu_devices)
    from unroll.train import distributed  # after flags: keep --help fast

    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                           auto=FLAGS.distributed)
    workdir = Path(FLAGS.workdir)
    if FLAGS.mode == "train":
        from unroll import train

        train.train_and_evaluate(config, workdir)
        return
    config = _checkpoint_config(workdir)
    if FLAGS.mode == "eval":
        from unroll import train

        train.evaluate_checkpoint(config, workdir, FLAGS.checkpoint, noise_levels=levels)
        return
    if not FLAGS.input:
        raise ConfigError("--mode=deblur needs --input=FILE[,FILE...] (files, folders or globs)")
    import unroll
    from unroll.inference import deblur

    model = unroll.load(workdir, FLAGS.checkpoint)
    noise = _image_noise()
    model.config = config  # the explicit flags that do not change the network (e.g. --bf16)
    deblur.deblur_files(model, FLAGS.input, FLAGS.output_dir or workdir / "deblurred",
                        overwrite=FLAGS.overwrite, tile_size=FLAGS.tile_size,
                        tile_overlap=FLAGS.tile_overlap, global_kernel=FLAGS.global_kernel,
                        noise=noise)


def _run_pretrained(levels):
    from unroll import pretrained

    config = _pretrained_config()
    model = pretrained.load(FLAGS.pretrained)
    noise = _image_noise() if FLAGS.mode == "deblur" else None
    model.config = config
    workdir = Path(FLAGS.workdir) if FLAGS["workdir"].present else None
    if FLAGS.mode == "eval":
        from unroll.classical.warm import warm_start
        from unroll.train.evaluation import evaluate, evaluate_noise_levels, format_table, make_eval_set
        from unroll.train.steps import make_predict

        predict = make_predict(model.graphdef, config.bf16, warm_start(config))
        results = evaluate(predict, model.params, make_eval_set(config),
                           config, out_dir=workdir, extra={"pretrained": FLAGS.pretrained})
        if workdir is None:
            print(format_table(results))
        if levels:
            evaluate_noise_levels(predict, model.params, config, levels, out_dir=workdir)
        return
    if not FLAGS.input:
        raise ConfigError("--mode=deblur needs --input=FILE[,FILE...] (files, folders or globs)")
    from unroll.inference import deblur

    output_dir = FLAGS.output_dir or (workdir / "deblurred" if workdir else Path("deblurred"))
    deblur.deblur_files(model, FLAGS.input, output_dir, overwrite=FLAGS.overwrite,
                        tile_size=FLAGS.tile_size, tile_overlap=FLAGS.tile_overlap,
                        global_kernel=FLAGS.global_kernel, noise=noise)


def main(argv):
    run_reporting_user_errors(run, argv)


if __name__ == "__main__":
    hostmem.configure()  # reuse XLA:CPU's per-step buffers (unroll/hostmem.py)
    app.run(main)
