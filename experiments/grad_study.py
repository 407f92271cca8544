"""Gradient studies of MGSTNet (`unroll.studies`): per-stage gradient norms, hypergradients of the
learned scalars, input sensitivity (JVP gains, Lipschitz constants per stage), unrolled against
implicit differentiation of GST_p.

    python -m experiments.grad_study --flagfile=experiments/flags/tiny.flags --workdir=DIR
    python -m experiments.grad_study --workdir=DIR --checkpoint=best
    python -m experiments.grad_study --flagfile=... --workdir=DIR --checkpoint=none

The configuration flags are those of `experiments.mgstnet`. `--checkpoint=latest|best` studies DIR's
checkpoint (`unroll.load`: the network and its configuration come from the checkpoint, no flagfile
needed; flags given explicitly replace data and loss settings, and may not change the network), or
the freshly initialised model when DIR has none; `--checkpoint=none` always studies the
initialisation. The json says which.
Data: `--num_batches` training batches of the configuration's pipeline and the first
`--num_images` evaluation images, centre-cropped to `--crop` (so that they batch).
Writes DIR/grad_study.json and DIR/grad_study/*.png.
"""

from __future__ import annotations

import time
from pathlib import Path

from absl import app, flags

from experiments import common
from experiments.common import UsageError
from unroll import atomic, hostmem

FLAGS = flags.FLAGS
common.define_config_flags()
common.define_workdir_flag()
flags.DEFINE_enum("checkpoint", "latest", ["latest", "best", "none"],
                  "checkpoint of --workdir to study; none: the initialised model")
flags.DEFINE_integer("num_batches", 2, "training batches for the gradient norms and hypergradients")
flags.DEFINE_integer("num_images", 3, "evaluation images (for every study)")
flags.DEFINE_integer("crop", 0, "centre crop of the evaluation images (0: --patch_size)")
flags.DEFINE_integer("power_iterations", 20, "power iterations for the Lipschitz constants")
flags.DEFINE_integer("probes", 4, "random directions for the JVP noise gains")
flags.DEFINE_list("gst_iterations", ["1", "2", "3", "5", "10", "20"],
                  "fixed-point iteration counts compared for GST")
flags.DEFINE_list("gst_p", ["0.2", "0.5", "0.8", "0.95"],
                  "exponents p of the GST comparison (with theta = 0.01), besides the model's own")
flags.DEFINE_integer("gst_samples", 4096, "samples for the GST derivative errors")
flags.DEFINE_integer("gst_reference_iterations", 80, "fixed-point steps of the converged GST reference")
flags.DEFINE_list("gst_shape", ["8", "128", "128", "64"], "tensor timed for the GST cost (N,H,W,C)")
flags.DEFINE_integer("gst_repeats", 3, "timed repetitions for the GST cost")


def _ints(name, minimum):
    try:
        values = [int(v) for v in FLAGS[name].value]
    except ValueError:
        raise UsageError(f"--{name}={','.join(FLAGS[name].value)}: expected integers") from None
    if not values or min(values) < minimum:
        raise UsageError(f"--{name}: expected integers >= {minimum}")
    return values


def _check_study_flags(config):
    for name in ("num_batches", "num_images", "power_iterations", "probes", "gst_samples",
                 "gst_repeats", "gst_reference_iterations"):
        if FLAGS[name].value < 1:
            raise UsageError(f"--{name}={FLAGS[name].value}: must be at least 1")
    crop = FLAGS.crop or config.patch_size
    multiple = 2 ** (config.scales - 1)
    if crop < config.kernel_size or crop % multiple:
        raise UsageError(f"--crop={crop}: must be >= --kernel_size={config.kernel_size} and a "
                         f"multiple of {multiple}")
    try:
        ps = [float(v) for v in FLAGS.gst_p]
    except ValueError:
        raise UsageError(f"--gst_p={','.join(FLAGS.gst_p)}: expected numbers") from None
    if any(not 0 < p <= 1 for p in ps):
        raise UsageError("--gst_p: every p must be in (0, 1]")
    shape = _ints("gst_shape", 1)
    if len(shape) != 4:
        raise UsageError("--gst_shape: expected N,H,W,C")
    return crop, ps, _ints("gst_iterations", 1), shape


def _centre_crop(image, size):
    h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top:top + size, left:left + size]


def _data(config, crop):
    import numpy as np

    from unroll import data

    stream = iter(data.make_train_dataset(
        config.train_dir or None, patch_size=config.patch_size, batch_size=config.batch_size,
        sigma_range=(config.sigma_min, config.sigma_max), kernel_size=config.kernel_size,
        noise=config.noise, motion_prob=config.motion_prob, seed=config.seed,
        channels=config.channels, shake_prob=config.shake_prob, quantize=config.quantize))
    batches = [{k: next_batch[k] for k in ("blurred", "sharp")}
               for next_batch in (next(stream) for _ in range(FLAGS.num_batches))]
    eval_set = data.make_eval_dataset(
        config.test_dir or None, kernel_size=config.kernel_size,
        sigma_range=(config.sigma_min, config.sigma_max), noise=config.noise,
        motion_prob=config.motion_prob, seed=config.seed, channels=config.channels,
        center_crop=config.eval_crop or None, shake_prob=config.shake_prob, quantize=config.quantize)
    examples = [eval_set[i] for i in range(min(FLAGS.num_images, len(eval_set)))]
    small = [e["name"] for e in examples if min(e["blurred"].shape[:2]) < crop]
    if small:
        raise UsageError(f"--crop={crop} is larger than evaluation image {small[0]}")
    eval_batch = {k: np.stack([_centre_crop(e[k], crop) for e in examples])
                  for k in ("blurred", "sharp")}
    return batches, eval_batch, [e["name"] for e in examples]


def _gst_pairs(grid_ps, learned):
    """(theta, p, label): theta = 0.01 with each grid p, then the model's own; duplicates merged."""
    pairs = {}
    for theta, p, label in [(0.01, p, "grid") for p in grid_ps] + learned:
        key = (round(theta, 6), round(p, 6))
        pairs[key] = (theta, p, f"{pairs[key][2]}, {label}" if key in pairs else label)
    return list(pairs.values())


def _checkpoint(workdir):
    """(configuration, loaded model or None): from DIR's checkpoint (`unroll.load`) unless
    --checkpoint=none or DIR has none; the flags given explicitly replace the saved values."""
    import unroll
    from unroll.checkpoint import Checkpoints

    if FLAGS.checkpoint != "none":
        with Checkpoints(workdir) as checkpoints:
            present = checkpoints.step("latest") is not None
        if present:
            loaded = unroll.load(workdir, checkpoint=FLAGS.checkpoint)
            config = common.config_from_flags(base=loaded.config)
            theirs = loaded.config.model_signature()
            diff = [f"--{k}={v!r} (checkpoint has {theirs.get(k)!r})"
                    for k, v in config.model_signature().items() if theirs.get(k) != v]
            if diff:
                raise UsageError(f"{', '.join(diff)}: the study is of the checkpoint's network "
                                 "(--checkpoint=none studies an initialised one)")
            return config, loaded
    return common.config_from_flags(), None


def _model(config, loaded, workdir):
    """(graphdef, params, description) of the loaded checkpoint, or the initialisation."""
    from flax import nnx

    from unroll.models import registry

    if loaded is not None:
        graphdef = loaded.graphdef
        if (config.gst_grad, config.remat) != (loaded.config.gst_grad, loaded.config.remat):
            # Same parameters, another way to differentiate (--gst_grad) or to store activations.
            graphdef = nnx.split(nnx.eval_shape(lambda: registry.build(config)))[0]
        return graphdef, loaded.params, {"source": "checkpoint", "checkpoint": FLAGS.checkpoint,
                                         "step": int(loaded.step)}
    graphdef, params = registry.build_split(config)
    reason = ("--checkpoint=none" if FLAGS.checkpoint == "none"
              else f"no {FLAGS.checkpoint} checkpoint in {workdir}")
    return graphdef, params, {"source": "initialisation", "reason": reason, "step": 0}


def run(argv):
    common.no_positional_arguments(argv)
    workdir = Path(FLAGS.workdir)
    config, loaded = _checkpoint(workdir)
    config = config.validate()
    if config.model != "mgstnet":
        raise UsageError(f"--model={config.model}: the gradient studies are of MGSTNet")
    crop, gst_ps, gst_iterations, gst_shape = _check_study_flags(config)

    from unroll import studies
    from unroll.models import registry

    t0 = time.perf_counter()
    graphdef, params, model = _model(config, loaded, workdir)
    batches, eval_batch, names = _data(config, crop)
    pairs = _gst_pairs(gst_ps, studies.learned_gst_pairs(graphdef, params))
    results = studies.run_study(
        graphdef, params, config, batches, eval_batch, power_iterations=FLAGS.power_iterations,
        probes=FLAGS.probes, seed=config.seed, gst_pairs=pairs, gst_iterations=gst_iterations,
        gst_samples=FLAGS.gst_samples, gst_reference_iterations=FLAGS.gst_reference_iterations,
        gst_shape=gst_shape, gst_repeats=FLAGS.gst_repeats)
    model.update(workdir=str(workdir.resolve()), num_params=registry.num_params(params))
    results = {"model": model, "config": config.to_dict(),
               "study": {k: FLAGS[k].value for k in ("num_batches", "num_images", "power_iterations",
                                                     "probes", "gst_samples", "gst_repeats",
                                                     "gst_reference_iterations")}
               | {"crop": crop, "eval_images": names, "gst_iterations": gst_iterations,
                  "gst_shape": gst_shape},
               **results}
    results["timings"]["total"] = time.perf_counter() - t0
    workdir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(workdir / "grad_study.json", results)
    (workdir / "grad_study").mkdir(exist_ok=True)
    studies.plot_study(results, workdir / "grad_study")
    _print_summary(results)


def _print_summary(results):
    train_norms, sens = results["train"]["grad_norms"], results["sensitivity"]
    print(f"model: {results['model']['source']} (step {results['model']['step']})")
    for k in range(len(train_norms["total"])):
        print(f"stage {k + 1}: |grad| kernel prox {train_norms['kernel_prox'][k]:.3e}  image prox "
              f"{train_norms['image_prox'][k]:.3e}  scalars {train_norms['scalars'][k]:.3e}  "
              f"Lipschitz max {sens['lipschitz_max'][k]:.3f}")
    for entry in results["gst"]["errors"]:
        i = entry["iterations"].index(3) if 3 in entry["iterations"] else 0
        print(f"GST p={entry['p']:.2f} ({entry['source']}): dGST/dy rel. error at "
              f"{entry['iterations'][i]} iterations: unrolled {entry['unrolled']['y'][i]:.2e}, "
              f"implicit {entry['implicit']['y'][i]:.2e}")


def main(argv):
    common.run_reporting_user_errors(run, argv)


if __name__ == "__main__":
    hostmem.configure()  # reuse XLA:CPU's per-step buffers (unroll/hostmem.py)
    app.run(main)
