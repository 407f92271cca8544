"""What every entry point of `experiments` shares: the configuration flags and the user-error wrapper.

Each entry point calls `define_config_flags()` (and `define_workdir_flag()`) itself, then defines its
own flags, so no entry point imports another one for its flags or deletes flags it does not want.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import sys

from absl import flags, logging

from unroll.config import Config, ConfigError

FLAGS = flags.FLAGS

HELP = {
    "model": "network: mgstnet, a CNN baseline: madn, idc, mtwdn, or a model registered with "
             "unroll.models.registry.register",
    "stages": "number of unrolled stages K",
    "scales": "scales of the image prior encoder-decoder (1-3)",
    "kernel_rcabs": "RCABs in the kernel prior G and G~",
    "image_rcabs": "RCABs per level in the image prior F and F~",
    "features": "width of the image prior at full resolution",
    "kernel_features": "width of the kernel prior",
    "kernel_size": "size of the estimated (and synthesised) kernels, odd",
    "channels": "image bands: 1 (grayscale), 3 (RGB) or any count for multiband TIFF",
    "threshold": "image shrinkage: gst (GST_p) or soft",
    "gst_grad": "how GST_p is differentiated: unrolled (its solver's steps) or implicit "
                "(the exact prox, implicit function theorem)",
    "gst_solver": "how GST_p's root is found: fixed_point (the paper's 3 steps of eq. 20) or halley "
                  "(one Halley step from an upper bound: more accurate, about 2x faster)",
    "kernel_prox": "use the kernel proximal module KPM",
    "image_prior": "MGSTNet's image prior (IPMM): paper (the multi-scale encoder-decoder with GST_p), "
                   "unet (a small residual U-Net denoiser) or haar_gst (orthonormal Haar + GST_p)",
    "boundary": "boundary of the blur operator: symmetric, circular or zero",
    "remat": "rematerialise each stage in the backward pass (less memory)",
    "stage_unroll": "stages per iteration of the stage loop, 0 for all (no loop): faster steps, "
                    "compile time growing with the stages unrolled; 1 with --remat",
    "image_step": "image update before the image prior: gradient (IGDM, eq. 17, the paper's) or "
                  "closed_form (the data term solved exactly by FFT, prior weight beta learned per stage)",
    "kernel_init": "initial kernel h_0: uniform (the paper's) or classical (unroll.classical's blind "
                   "estimate at inference; training starts from perturbed true kernels)",
    "image_init": "initial image u_0: blurred (the input g, the paper's) or nonblind (g restored with "
                  "h_0 by unroll.nonblind; needs --kernel_init=classical)",
    "kernel_bank": "with --kernel_init=classical: train from this many pairs (true kernel, classical "
                   "estimate) made once in the workdir (kernel_bank.npz, resumable); 0: perturbed true "
                   "kernels (kernels.perturb)",
    "train_dir": "training images (folder, recursive), or a comma-separated list of folders where "
                 "builtin is the built-in samples; empty: built-in samples",
    "test_dir": "test images: a folder (blurred here) or blur/+sharp/ pairs; empty: built-in samples",
    "patch_size": "training crop size",
    "sigma_min": "smallest Gaussian blur sigma",
    "sigma_max": "largest Gaussian blur sigma",
    "noise": "standard deviation of the added Gaussian noise",
    "noise_max": "if > 0, each training image's noise std is drawn from [noise, noise_max] "
                 "(evaluation keeps --noise)",
    "noise_power": "with --noise_max: std = noise + (noise_max - noise) * U[0, 1] ** noise_power; "
                   "1 draws it uniformly, 2 favours low noise (median at a quarter of the range)",
    "motion_prob": "probability of a random motion kernel instead of a Gaussian",
    "shake_prob": "probability of a camera-shake kernel from a random-acceleration trajectory "
                  "(kernels.shake) instead of a Gaussian; motion_prob + shake_prob <= 1",
    "quantize": "round the noisy blurred images (training and evaluation) to 8 bits, clipped to [0, 1]",
    "gray_prob": "probability that a training crop is made gray (BT.601 luminance on all 3 "
                 "channels), so an RGB model also learns gray inputs",
    "contrast_min": "if < 1, each training crop's contrast is scaled about its mean by a factor drawn "
                    "in [contrast_min, 1] (faint scenes: haze, low sun), the target too",
    "init_from": "fine-tune: start training from the weights of a shipped model (aerial, motion) or of "
                 "a workdir's best checkpoint, with a fresh optimiser; the network flags must match",
    "eval_contrast": "if < 1, each synthesised test scene's contrast is scaled about its mean by this "
                     "factor before it is blurred (faint scenes: haze, low sun), the reference too",
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


def define_config_flags(flag_values: flags.FlagValues = FLAGS):
    """One flag per field of `unroll.config.Config`: same name, same default (defined once per
    process, whichever entry points are imported), and --imports."""
    if "imports" not in flag_values:
        flags.DEFINE_list("imports", [], "Python modules to import before the run, e.g. one that "
                          "registers a model (unroll.models.registry.register)", flag_values=flag_values)
    for field in dataclasses.fields(Config):
        if field.name in flag_values:
            continue
        default, help_ = field.default, HELP.get(field.name, field.name)
        define = (flags.DEFINE_bool if isinstance(default, bool) else
                  flags.DEFINE_integer if isinstance(default, int) else
                  flags.DEFINE_float if isinstance(default, float) else flags.DEFINE_string)
        define(field.name, default, help_, flag_values=flag_values)


def define_workdir_flag(default: str = "workdir", help_: str = "output directory"):
    if "workdir" not in FLAGS:
        flags.DEFINE_string("workdir", default, help_)


def import_modules(names):
    """Import the modules of --imports (their registrations then count); a missing one is a ConfigError."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"--imports={name}: cannot import it ({exc})") from None


def config_from_flags(base: Config | None = None, flag_values: flags.FlagValues = FLAGS) -> Config:
    """The configuration the flags give (after importing --imports). With `base` (e.g. a
    checkpoint's), only flags given on the command line or in a flagfile replace its values."""
    import_modules(flag_values["imports"].value if "imports" in flag_values else [])
    if base is None:
        return Config(**{f.name: flag_values[f.name].value for f in dataclasses.fields(Config)})
    given = {f.name: flag_values[f.name].value for f in dataclasses.fields(Config)
             if flag_values[f.name].present}
    return dataclasses.replace(base, **given)


def config_from_flagfile(path, args=()) -> Config:
    """The configuration that a flagfile (and more `args`) gives, read by absl's own parser exactly as
    an entry point reads it: nested --flagfile= (relative to the working directory, as on the
    command line), absl's value syntax, and `flags.Error` for a name or value the command line would
    refuse. The flags known are the Config fields and those of every entry point imported so far;
    they are parsed into a copy, so this process's flags stay untouched."""
    define_config_flags()
    flag_values = copy.deepcopy(FLAGS)
    flag_values.unparse_flags()  # defaults, whatever this process parsed before
    flag_values(["flagfile", f"--flagfile={path}", *args])
    return config_from_flags(flag_values=flag_values)


def no_positional_arguments(argv):
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments {' '.join(argv[1:])!r} (flags look like --name=value)")


class UsageError(ValueError):
    """A bad flag or file given to an entry point; the message names it."""


# Where the errors a user can cause are defined, by module. They are looked up in sys.modules after
# the fact, not imported up front: an error's module is necessarily loaded if it was raised, and a
# refused flag then costs no import of jax, orbax or scipy (a refusal or --help takes a fraction of a
# second instead of seconds).
_USER_ERRORS = {"unroll.checkpoint": ("CheckpointError",), "unroll.data.images": ("DataError",),
                "unroll.atomic": ("FolderBusyError",)}
_MACHINE_ERRORS = {"unroll.checkpoint": ("CheckpointSaveError",), "unroll.atomic": ("WriteError",)}


def _loaded(where: dict) -> tuple[type, ...]:
    return tuple(getattr(sys.modules[module], name) for module, names in where.items()
                 if module in sys.modules for name in names if hasattr(sys.modules[module], name))


def run_reporting_user_errors(run_fn, argv):
    """`run_fn(argv)` with a user's mistake (a flag, a file, a checkpoint, a busy workdir or output
    folder, a damaged shipped model) reported on one line and exit code 2, and a failed save or write
    (a full disk, an unwritable folder) on one line and exit code 1: never a traceback."""
    if "verbosity" in FLAGS and not FLAGS["verbosity"].present:  # orbax and grain log at INFO
        logging.set_verbosity(logging.WARNING)
    try:
        if "imports" in FLAGS:  # before the run: a registered model is then known everywhere
            import_modules(FLAGS["imports"].value)  # not FLAGS.imports: that raises when unparsed
        run_fn(argv)
    except Exception as exc:
        if isinstance(exc, _loaded(_MACHINE_ERRORS)):  # the machine's fault (a full disk), not the user's
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)
        if isinstance(exc, (UsageError, ConfigError, FileNotFoundError, FileExistsError,
                            FloatingPointError, *_loaded(_USER_ERRORS))):
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        raise
