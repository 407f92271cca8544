"""Train, evaluate and deblur with MGSTNet (or a CNN baseline: --model=madn|idc|mtwdn).

    python -m experiments.mgstnet --flagfile=experiments/flags/demo.flags --workdir=/tmp/demo
    python -m experiments.mgstnet --flagfile=... --workdir=DIR --mode=eval
    python -m experiments.mgstnet --flagfile=... --workdir=DIR --mode=deblur --input=photo.png,folder/

`train` resumes from DIR's newest checkpoint when there is one and ends with an evaluation;
`eval` evaluates DIR's checkpoint; `deblur` writes deblurred images and estimated kernels.
Every field of `unroll.config.Config` is a flag of the same name.

Several processes (hosts, GPUs): run the same command on each with --coordinator_address,
--num_processes and --process_id, or with --distributed under SLURM / Open MPI / a TPU slice
(see unroll/distributed.py and the README).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from absl import app, flags, logging

from unroll.config import Config, ConfigError

HELP = {
    "model": "network: mgstnet, or a CNN baseline: madn, idc, mtwdn",
    "stages": "number of unrolled stages K",
    "scales": "scales of the image prior encoder-decoder (1-3)",
    "kernel_rcabs": "RCABs in the kernel prior G and G~",
    "image_rcabs": "RCABs per level in the image prior F and F~",
    "features": "width of the image prior at full resolution",
    "kernel_features": "width of the kernel prior",
    "kernel_size": "size of the estimated (and synthesised) kernels, odd",
    "channels": "image bands: 1 (grayscale), 3 (RGB) or any count for multiband TIFF",
    "threshold": "image shrinkage: gst (GST_p) or soft",
    "kernel_prox": "use the kernel proximal module KPM",
    "boundary": "boundary of the blur operator: symmetric, circular or zero",
    "remat": "rematerialise each stage in the backward pass (less memory)",
    "train_dir": "training images (folder, recursive); empty: built-in samples",
    "test_dir": "test images: a folder (blurred here) or blur/+sharp/ pairs; empty: built-in samples",
    "patch_size": "training crop size",
    "sigma_min": "smallest Gaussian blur sigma",
    "sigma_max": "largest Gaussian blur sigma",
    "noise": "standard deviation of the added Gaussian noise",
    "motion_prob": "probability of a random motion kernel instead of a Gaussian",
    "eval_crop": "centre-crop evaluation images to this size (0: whole images)",
    "num_workers": "grain worker processes for the training data",
    "batch_size": "global batch size (divisible by the number of devices)",
    "steps": "training steps (give --steps or --epochs)",
    "epochs": "training epochs over the training images",
    "learning_rate": "Adam learning rate",
    "final_learning_rate": "learning rate at the end of training",
    "final_lr_epochs": "epochs at the final learning rate (epoch budget)",
    "final_lr_steps": "steps at the final learning rate (step budget)",
    "alpha": "weight of the kernel loss (eq. 21)",
    "grad_clip": "clip gradients to this global norm (0: off)",
    "bf16": "compute in bfloat16 (parameters, loss and optimiser stay float32)",
    "seed": "seed of the initialisation and the data",
    "log_every": "steps between log lines",
    "save_every": "steps between checkpoints",
    "eval_every": "steps between evaluations (0: only at the end)",
    "keep": "checkpoints to keep (plus the best)",
    "num_samples": "evaluation images drawn as sample grids",
}


def _define_config_flags():
    for field in dataclasses.fields(Config):
        default, help_ = field.default, HELP.get(field.name, field.name)
        if isinstance(default, bool):
            flags.DEFINE_bool(field.name, default, help_)
        elif isinstance(default, int):
            flags.DEFINE_integer(field.name, default, help_)
        elif isinstance(default, float):
            flags.DEFINE_float(field.name, default, help_)
        else:
            flags.DEFINE_string(field.name, default, help_)


_define_config_flags()
flags.DEFINE_string("workdir", "workdir", "directory for checkpoints, logs, metrics and pictures")
flags.DEFINE_enum("mode", "train", ["train", "eval", "deblur"], "what to do")
flags.DEFINE_enum("checkpoint", "latest", ["latest", "best"], "eval/deblur: which checkpoint")
flags.DEFINE_list("input", [], "deblur: image files, folders or glob patterns")
flags.DEFINE_string("output_dir", "", "deblur: output folder (default WORKDIR/deblurred)")
flags.DEFINE_bool("overwrite", False, "deblur: replace existing output files")
flags.DEFINE_integer("tile_size", 0, "deblur: process in overlapping tiles of this size (0: whole "
                     "images); each tile estimates its own kernel")
flags.DEFINE_integer("tile_overlap", 32, "deblur: overlap between neighbouring tiles, pixels")
flags.DEFINE_bool("global_kernel", False, "deblur with tiles: one kernel for the whole scene, "
                  "estimated on its most textured tiles")
flags.DEFINE_bool("distributed", False,
                  "multi-process run: jax.distributed.initialize() with cluster auto-detection")
flags.DEFINE_string("coordinator_address", "", "multi-process run: HOST:PORT of process 0")
flags.DEFINE_integer("num_processes", 0, "multi-process run: number of processes")
flags.DEFINE_integer("process_id", -1, "multi-process run: this process's index")
flags.DEFINE_integer("cpu_devices", 0, "simulate this many CPU devices per process (testing)")
FLAGS = flags.FLAGS


def config_from_flags() -> Config:
    return Config(**{f.name: FLAGS[f.name].value for f in dataclasses.fields(Config)})


def run(argv):
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments {' '.join(argv[1:])!r} (flags look like --name=value)")
    config = config_from_flags().validate()
    import jax

    if FLAGS.cpu_devices:
        jax.config.update("jax_num_cpu_devices", FLAGS.cpu_devices)
    from unroll import distributed, train  # after flags: keep --help fast

    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                           auto=FLAGS.distributed)

    workdir = Path(FLAGS.workdir)
    if FLAGS.mode == "train":
        train.train_and_evaluate(config, workdir)
    elif FLAGS.mode == "eval":
        train.evaluate_checkpoint(config, workdir, FLAGS.checkpoint)
    else:
        if not FLAGS.input:
            raise ConfigError("--mode=deblur needs --input=FILE[,FILE...] (files, folders or globs)")
        from unroll import deblur

        deblur.deblur_files(config, workdir, FLAGS.input, FLAGS.output_dir or workdir / "deblurred",
                            overwrite=FLAGS.overwrite, tile_size=FLAGS.tile_size,
                            tile_overlap=FLAGS.tile_overlap, global_kernel=FLAGS.global_kernel,
                            which=FLAGS.checkpoint)


def run_reporting_user_errors(run_fn, argv):
    """`run_fn(argv)` with a user's mistake (a flag, a file, a checkpoint) reported on one line and
    exit code 2, never a traceback. Shared by every entry point of `experiments`."""
    from unroll.checkpoint import CheckpointError
    from unroll.data import DataError

    if not FLAGS["verbosity"].present:  # orbax and grain log every save at INFO
        logging.set_verbosity(logging.WARNING)
    try:
        run_fn(argv)
    except (ConfigError, DataError, CheckpointError, FileNotFoundError, FileExistsError,
            FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def main(argv):
    run_reporting_user_errors(run, argv)


if __name__ == "__main__":
    app.run(main)
