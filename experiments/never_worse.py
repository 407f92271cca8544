"""Never worse: the classical solver's failure check and fallback (`unroll.classical.check_restoration`,
`blind_deconvolve(..., fallback=True)`) on synthetic camera shake of real aerial scenes (RSSCN7).

    python -m experiments.never_worse --mode=calibrate --workdir=runs/never_worse
    python -m experiments.never_worse --mode=evaluate --workdir=runs/never_worse

* `calibrate` (what the check's thresholds were chosen on): `--scenes` random RSSCN7 *train* scenes,
  a random `--crop`^2 window of each, gray or (with probability `--rgb_share`) RGB, blurred (symmetric
  boundary, as the training data) by an `unroll.kernels.motion` kernel of a random odd size in
  `--blur_sizes` and random extent (`--generator=shake`: `unroll.kernels.shake`; or, with
  probability `--gaussian_share`, a Gaussian of sigma U[1, 4]), noise std U[0, `--noise`], 8-bit
  quantised. Each image is deblurred with every estimated kernel size in `--kernel_sizes` (no
  fallback): a number, or relative to the true blur's size, `true`, `true+8`, `true*0.7` (odd).
  Per run the check's features and verdict, and the PSNR gain over the blurred input. Reports the
  check's false negatives (a run more than 0.5 dB below its input that passes) and false positives
  (a run that fails the check but is not worse), and the fallback simulated on these runs: per
  image the first run in `--kernel_sizes` order that passes, else the input, for the check's
  thresholds and a few others beside them.
* `evaluate` (a final check, never used to choose settings): `--scenes` random RSSCN7 *test* scenes,
  whole (`--crop=0`), the same blur with motion kernels only (`--generator=shake`: camera-shake
  kernels, `unroll.kernels.shake`) and noise std exactly `--noise`; the solver is given
  `--kernel_size` (0: the true size). Per scene the PSNR of the input, of the plain solver and of the
  solver with its fallback (and which attempt it kept), and with `--checkpoint=DIR_OR_NAME` of a
  network's `Model.deblur`.

Measured (`--mode=evaluate` with its defaults: 20 whole 400x400 test scenes, 7 of them RGB, motion
kernels of size 15-27, noise 0.005, solver kernel size 27; 328 s on a 2-core CPU shared with a
training run, compilation included): mean gain over the blurred input +0.76 dB plain (worst
-14.26 dB, 7 scenes more than 0.5 dB below the input), +2.16 dB with the fallback (worst +0.00 dB,
none below; one scene kept its first retry, at 41 px). The price: 4 scenes whose plain result
gained 3.2-6.0 dB failed the check (false positives, as half the good runs in calibration) and,
their retries failing too, were returned unchanged.

Scores: PSNR of the luminance, clipped to [0, 1], by `unroll.levin.aligned_scores` with a 20 px crop and
the best integer shift within +-5 px (a blind method may translate). Writes WORKDIR/<mode>.json
(configuration and per-image rows) and WORKDIR/<mode>.md (the summary, also printed).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from absl import app, flags

from experiments.common import UsageError, run_reporting_user_errors
from unroll import hostmem
from unroll.verdict import MAX_KERNEL_SPREAD, MAX_RANGE_RATIO

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = "../shared/data/rsscn7"
FAIL_DB = 0.5  # a restoration more than this below its input is a failure
# calibrate: thresholds (max range ratio, max kernel spread) the simulated fallback is reported for
THRESHOLD_GRID = ((1.4, 0.2), (1.4, 0.25), (1.4, 0.3), (1.5, 0.25), (1.5, 0.3))

flags.DEFINE_enum("mode", None, ["calibrate", "evaluate"], "calibrate (train scenes) or evaluate "
                  "(test scenes)")
flags.DEFINE_string("workdir", None, "output folder (created)")
flags.DEFINE_string("rsscn7_dir", DEFAULT_DATA, "RSSCN7 (train/, test/ of class folders); the default "
                    "is resolved against the repository root")
flags.DEFINE_integer("scenes", None, "scenes (default: 96 to calibrate, 20 to evaluate)")
flags.DEFINE_integer("crop", None, "square crop of each scene, px; 0 = the whole scene (default: 256 "
                     "to calibrate, 0 to evaluate)")
flags.DEFINE_list("blur_sizes", None, "smallest,largest odd kernel size of the blur (default: 15,31 "
                  "to calibrate, 15,27 to evaluate)")
flags.DEFINE_list("kernel_sizes", ["15", "21", "27", "31"], "calibrate: the estimated kernel sizes, "
                  "in the fallback's order: odd numbers, or true, true+N, true*F (the blur's size)")
flags.DEFINE_integer("kernel_size", 27, "evaluate: the kernel size given to the solver (0: the true "
                     "size)")
flags.DEFINE_float("noise", None, "noise std (calibrate: the largest of a uniform range; default "
                   "0.01 to calibrate, 0.005 to evaluate)")
flags.DEFINE_float("rgb_share", 0.3, "share of RGB images (the rest are gray)")
flags.DEFINE_float("gaussian_share", 0.2, "calibrate: share of Gaussian blurs")
flags.DEFINE_enum("generator", "motion", ["motion", "shake"], "evaluate: the blur kernels' generator, "
                  "unroll.kernels.motion or kernels.shake (camera-shake trajectories)")
flags.DEFINE_string("checkpoint", "", "evaluate: also score a network, unroll.load(CHECKPOINT) (a workdir "
                    "or a shipped model's name), through Model.deblur")
flags.DEFINE_integer("batch", 4, "images per solver call")
flags.DEFINE_integer("seed", 0, "seed of the scenes, crops and blur")
FLAGS = flags.FLAGS


def _defaults():
    calibrate = FLAGS.mode == "calibrate"
    scenes = FLAGS.scenes if FLAGS.scenes is not None else (96 if calibrate else 20)
    crop = FLAGS.crop if FLAGS.crop is not None else (256 if calibrate else 0)
    blur = FLAGS.blur_sizes or (["15", "31"] if calibrate else ["15", "27"])
    noise = FLAGS.noise if FLAGS.noise is not None else (0.01 if calibrate else 0.005)
    try:
        blur = [int(b) for b in blur]
        sizes = list(FLAGS.kernel_sizes)  # kept as given: `window` resolves each per blur size
        for k in sizes:
            window(k, 3)  # a ValueError for what is not a number, true, true+N or true*F
    except ValueError as exc:
        raise UsageError(f"--blur_sizes take odd integers and --kernel_sizes odd integers or true, "
                         f"true+N, true*F: {exc}") from None
    if len(blur) != 2 or blur[0] > blur[1]:
        raise UsageError(f"--blur_sizes must be smallest,largest, got {FLAGS.blur_sizes}")
    largest = max(window(k, blur[-1]) for k in sizes)
    for k in blur + [window(k, b) for k in sizes for b in blur] + (
            [FLAGS.kernel_size] if FLAGS.kernel_size else []):
        if k < 3 or k % 2 == 0:
            raise UsageError(f"kernel sizes must be odd integers >= 3, got {k}")
    if scenes < 1 or crop < 0 or FLAGS.batch < 1 or noise < 0:
        raise UsageError("--scenes and --batch must be >= 1, --crop and --noise >= 0")
    biggest = max(blur + [largest] if calibrate else blur + [FLAGS.kernel_size])  # the solver's kernels
    if crop and crop < 2 * biggest + 40:
        raise UsageError(f"--crop {crop} is too small for kernels up to {biggest}")
    for name in ("rgb_share", "gaussian_share"):
        if not 0 <= FLAGS[name].value <= 1:
            raise UsageError(f"--{name} must be in [0, 1], got {FLAGS[name].value}")
    return dict(mode=FLAGS.mode, scenes=scenes, crop=crop, blur_sizes=blur, noise=noise,
                kernel_sizes=sizes if calibrate else [FLAGS.kernel_size], rgb_share=FLAGS.rgb_share,
                gaussian_share=FLAGS.gaussian_share if calibrate else 0.0, seed=FLAGS.seed,
                generator=FLAGS.generator,
                checkpoint="" if calibrate else FLAGS.checkpoint)


def window(spec, blur_size: int) -> int:
    """The solver's kernel size for a `--kernel_sizes` entry and a blur of size `blur_size`: a number
    as it is; `true`, `true+N` or `true*F` relative to the blur (odd, at least 3).

    >>> window("27", 13), window("true", 13), window("true+8", 13), window("true*0.7", 19)
    (27, 13, 21, 13)
    """
    spec = str(spec).strip()
    if not spec.startswith("true"):
        return int(spec)
    rest = spec[len("true"):]
    if not rest:
        return blur_size
    if rest[0] == "+":
        return blur_size + int(rest[1:])
    if rest[0] == "*":
        from unroll.classical.l0 import _odd

        return _odd(blur_size * float(rest[1:]))
    raise ValueError(f"{spec!r} is not true, true+N or true*F")


def simulate_fallback(rows, order, max_range: float, max_spread: float) -> dict:
    """The fallback on calibration runs: per image the gain of the first run in `order` (keys of
    its "runs") that passes the check with these thresholds, 0 (the input) when none does.
    -> mean_gain, worst_gain, below_input (> 0.5 dB below), kept (images not returned unchanged)."""
    gains = []
    for row in rows:
        gain = 0.0
        for key in order:
            run = row["runs"].get(key)
            if run and run["range_ratio"] <= max_range and run["kernel_spread"] <= max_spread:
                gain = float(run["psnr"] - row["psnr_input"])
                break
        gains.append(gain)
    return dict(mean_gain=sum(gains) / len(gains), worst_gain=min(gains),
                below_input=sum(g < -FAIL_DB for g in gains), kept=sum(g != 0.0 for g in gains))


def _data_root() -> Path:
    given = FLAGS.rsscn7_dir
    root = ((REPO / given) if given == DEFAULT_DATA else Path(given).expanduser()).resolve()
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise UsageError(f"RSSCN7 folder {root} has no train/ and test/ (give --rsscn7_dir=FOLDER)")
    return root


def make_examples(root: Path, config: dict):
    """The synthetic set: [dict(name, sharp [H, W, C], blurred, kernel, noise)]."""
    import numpy as np

    from unroll import data, kernels
    from unroll.data.degradation import blur_host

    split = "train" if config["mode"] == "calibrate" else "test"
    files = sorted((root / split).glob("*/*.jpg"))
    if len(files) < config["scenes"]:
        raise UsageError(f"{root / split} holds {len(files)} .jpg scenes, fewer than --scenes "
                         f"{config['scenes']}")
    chosen = np.random.default_rng(config["seed"]).choice(len(files), config["scenes"], replace=False)
    rng = np.random.default_rng(config["seed"] + 1)
    lo, hi = config["blur_sizes"]
    out = []
    for path in (files[i] for i in chosen):
        sharp = data.load_image(path, 3)
        crop = config["crop"]
        if crop:
            if min(sharp.shape[:2]) < crop:
                raise UsageError(f"{path} ({sharp.shape[1]}x{sharp.shape[0]}) is smaller than --crop")
            top = int(rng.integers(0, sharp.shape[0] - crop + 1))
            left = int(rng.integers(0, sharp.shape[1] - crop + 1))
            sharp = sharp[top:top + crop, left:left + crop]
        if not rng.random() < config["rgb_share"]:  # gray: the BT.601 luminance
            sharp = np.ascontiguousarray((sharp @ _luma())[..., None])
        size = int(rng.choice(np.arange(lo, hi + 1, 2)))
        if rng.random() < 1 - config["gaussian_share"]:
            generator = kernels.shake if config.get("generator") == "shake" else kernels.motion
            kernel = generator(size, rng)
        else:
            kernel = kernels.gaussian(size, float(rng.uniform(1.0, 4.0)))
        kernel = np.asarray(kernel, np.float32)
        noise = float(rng.uniform(0, config["noise"])) if config["mode"] == "calibrate" else config["noise"]
        blurred = blur_host(sharp, kernel) + noise * rng.standard_normal(sharp.shape).astype(np.float32)
        blurred = (np.round(np.clip(blurred, 0, 1) * 255) / 255).astype(np.float32)
        out.append(dict(name=f"{path.parent.name}/{path.stem}", sharp=sharp, blurred=blurred,
                        kernel=kernel, noise=noise))
    return out


def _luma():
    from unroll.classical.layout import LUMA

    return LUMA


def score(image, sharp) -> float:
    """Aligned PSNR of the luminance (clipped to [0, 1])."""
    import numpy as np

    from unroll import levin

    def gray(x):
        return x[..., 0] if x.shape[-1] == 1 else x @ _luma()

    est = np.clip(gray(np.asarray(image, np.float32)), 0, 1)
    return levin.aligned_scores(est, gray(sharp), crop=20, max_shift=5, step=1).psnr


def _batches(examples, batch, key=lambda ex: ex["blurred"].shape):
    """Groups of at most `batch` indices with equal `key` (by default the shape: gray and RGB apart)."""
    groups = {}
    for i, ex in enumerate(examples):
        groups.setdefault(key(ex), []).append(i)
    for idx in groups.values():
        for start in range(0, len(idx), batch):
            yield idx[start:start + batch]


def calibrate(examples, config, batch):
    import numpy as np

    from unroll import metrics
    from unroll.classical import check_restoration, l0

    rows = [dict(name=ex["name"], blur_size=int(ex["kernel"].shape[0]), noise=ex["noise"],
                 channels=int(ex["blurred"].shape[-1]), psnr_input=score(ex["blurred"], ex["sharp"]),
                 runs={}) for ex in examples]
    for spec in config["kernel_sizes"]:
        t0 = time.time()
        def size(ex, spec=spec):
            return window(spec, int(ex["kernel"].shape[0]))

        for idx in _batches(examples, batch, key=lambda ex: (ex["blurred"].shape, size(ex))):
            k = size(examples[idx[0]])
            g = np.stack([examples[i]["blurred"] for i in idx])
            u, h = l0.blind_deconvolve(g, k, layout="NHWC")
            verdict = check_restoration(g, u, h, layout="NHWC")
            for j, i in enumerate(idx):
                run = {name: float(v[j]) for name, v in verdict.features.items()}
                run.update(kernel_size=k, ok=bool(verdict.ok[j]), score=float(verdict.score[j]),
                           psnr=score(u[j], examples[i]["sharp"]),
                           kernel_mnc=float(metrics.mnc(h[j][None], examples[i]["kernel"][None])[0]))
                rows[i]["runs"][str(spec)] = run
        print(f"kernel size {spec}: {time.time() - t0:.0f} s", flush=True)
    runs = [(r, run) for r in rows for run in r["runs"].values()]
    worse = [run["psnr"] < r["psnr_input"] - FAIL_DB for r, run in runs]
    passed = [run["ok"] for _, run in runs]
    fn = sum(w and p for w, p in zip(worse, passed))
    fp = sum((not w) and (not p) for w, p in zip(worse, passed))
    summary = dict(runs=len(runs), worse=sum(worse), false_negatives=fn, false_positives=fp,
                   false_negative_rate=fn / max(sum(worse), 1),
                   false_positive_rate=fp / max(len(runs) - sum(worse), 1))
    lines = [f"# Check calibration: {len(rows)} RSSCN7 train crops x kernel sizes {config['kernel_sizes']}",
             "", f"runs {len(runs)}, more than {FAIL_DB} dB below the input: {sum(worse)}",
             f"false negatives (worse, passed): {fn} ({summary['false_negative_rate']:.1%} of the worse)",
             f"false positives (not worse, failed): {fp} ({summary['false_positive_rate']:.1%} of the "
             "others)", "",
             f"The fallback simulated on these runs (sizes in the order {config['kernel_sizes']}, the "
             "input when none passes):", "",
             "| max range ratio | max kernel spread | mean gain dB | worst gain dB | images > 0.5 dB "
             "below input | images restored |", "| --- | --- | --- | --- | --- | --- |"]
    order = [str(k) for k in config["kernel_sizes"]]
    summary["fallback"] = {}
    for max_range, max_spread in THRESHOLD_GRID:
        sim = simulate_fallback(rows, order, max_range, max_spread)
        summary["fallback"][f"{max_range},{max_spread}"] = sim
        mark = " (the check)" if (max_range, max_spread) == (MAX_RANGE_RATIO, MAX_KERNEL_SPREAD) else ""
        lines.append(f"| {max_range}{mark} | {max_spread} | {sim['mean_gain']:+.2f} | {sim['worst_gain']:+.2f} "
                     f"| {sim['below_input']} | {sim['kept']} of {len(rows)} |")
    return rows, summary, lines


def evaluate(examples, config, batch, earlier=None):
    """Per scene the input, the plain solver, the solver with its fallback and, with a checkpoint,
    the network. `earlier`: (rows, seconds) of an earlier run on the same scenes, whose solver
    columns are reused (a network added to a finished evaluation does not rerun the solver)."""
    import numpy as np

    import unroll
    from unroll.classical import l0

    model = unroll.load(config["checkpoint"]) if config["checkpoint"] else None  # a bad name fails now

    rows = [dict(name=ex["name"], blur_size=int(ex["kernel"].shape[0]),
                 channels=int(ex["blurred"].shape[-1]), psnr_input=score(ex["blurred"], ex["sharp"]))
            for ex in examples]
    solver = ("psnr_plain", "psnr_fallback", "attempt")
    if earlier is not None:
        for row, old in zip(rows, earlier[0]):
            row.update({key: old[key] for key in solver})
    t0 = time.time()
    for idx in ([] if earlier is not None else _batches(examples, batch)):
        by_size = {}
        for i in idx:  # the true size, or one size for all
            by_size.setdefault(config["kernel_sizes"][0] or rows[i]["blur_size"], []).append(i)
        for k, sub in by_size.items():
            g = np.stack([examples[i]["blurred"] for i in sub])
            u, h = l0.blind_deconvolve(g, k, layout="NHWC")
            uf, _, attempt = l0.never_worse(g, u, h, k, layout="NHWC")
            for j, i in enumerate(sub):
                rows[i].update(psnr_plain=score(u[j], examples[i]["sharp"]),
                               psnr_fallback=score(uf[j], examples[i]["sharp"]),
                               attempt=int(attempt[j]))
    seconds = time.time() - t0 if earlier is None else earlier[1]
    methods = ("plain", "fallback")
    summary = {"seconds": seconds}
    if model is not None:
        t0 = time.time()
        for i, ex in enumerate(examples):
            u, _ = model.deblur(ex["blurred"])
            rows[i]["psnr_network"] = score(np.asarray(u).reshape(ex["blurred"].shape), ex["sharp"])
        summary["network_seconds"] = time.time() - t0
        methods += ("network",)
    gain = {m: np.array([r[f"psnr_{m}"] - r["psnr_input"] for r in rows]) for m in methods}
    for m, d in gain.items():
        summary[m] = dict(mean_gain=float(d.mean()), worst_gain=float(d.min()),
                          below_input=int(np.sum(d < -FAIL_DB)))
    network = "network" in methods
    lines = [f"# Never worse: {len(rows)} RSSCN7 test scenes, {config['generator']} blur "
             f"{config['blur_sizes']}, noise {config['noise']}, solver kernel size "
             f"{config['kernel_sizes'][0] or 'true'}" + (f", network {config['checkpoint']}" if network else ""),
             "", "| scene | blur | C | input | plain | fallback | attempt |" + (" network |" if network else ""),
             "| --- " * (8 if network else 7) + "|"]
    lines += [f"| {r['name']} | {r['blur_size']} | {r['channels']} | {r['psnr_input']:.2f} | "
              f"{r['psnr_plain']:.2f} | {r['psnr_fallback']:.2f} | {r['attempt']} |"
              + (f" {r['psnr_network']:.2f} |" if network else "") for r in rows]
    lines += ["", "| method | mean gain dB | worst gain dB | scenes > 0.5 dB below input |",
              "| --- | --- | --- | --- |"]
    lines += [f"| {m} | {summary[m]['mean_gain']:+.2f} | {summary[m]['worst_gain']:+.2f} | "
              f"{summary[m]['below_input']} |" for m in methods]
    lines += ["", f"{seconds:.0f} s on this CPU for the solver (compilation included)"
              + (f", {summary['network_seconds']:.0f} s for the network" if network else "")]
    return rows, summary, lines


def _earlier(workdir: Path, config: dict):
    """(rows, solver seconds) of an earlier evaluation in `workdir` on the same scenes (its
    configuration equal but for the checkpoint), or None."""
    path = workdir / "evaluate.json"
    if not path.exists():
        return None
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = {k: v for k, v in earlier.get("config", {}).items() if k != "checkpoint"}
    if same != {k: v for k, v in config.items() if k != "checkpoint"}:
        return None
    return earlier["rows"], float(earlier["summary"]["seconds"])


def run(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {' '.join(argv[1:])!r} (flags look like --name=value)")
    if not FLAGS.mode or not FLAGS.workdir:
        raise UsageError("give --mode=calibrate|evaluate and --workdir=DIR")
    config = _defaults()
    root = _data_root()
    workdir = Path(FLAGS.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    examples = make_examples(root, config)
    if config["mode"] == "calibrate":
        rows, summary, lines = calibrate(examples, config, FLAGS.batch)
    else:
        rows, summary, lines = evaluate(examples, config, FLAGS.batch, _earlier(workdir, config))
    (workdir / f"{config['mode']}.json").write_text(json.dumps(
        {"config": config, "summary": summary, "rows": rows}, indent=1))
    text = "\n".join(lines) + "\n"
    (workdir / f"{config['mode']}.md").write_text(text)
    print(text)


def main(argv):
    run_reporting_user_errors(run, argv)


if __name__ == "__main__":
    hostmem.configure()
    app.run(main)
