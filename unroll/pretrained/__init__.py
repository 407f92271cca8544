"""Networks shipped with the package, loadable by name with no training and no network access.

Each lives in `unroll/pretrained/<name>/`: `config.json` (the `Config` it was trained with),
`params.npz` (one array per parameter, named by its path in the parameter tree), `metrics.json`
(its test scores), `MODEL_CARD.md` (data, degradation, command, budget, scores) and `SHA256SUMS`
(the SHA-256 of each of them, in `sha256sum` format: `sha256sum -c SHA256SUMS` checks them too).

Loading verifies the files it reads: a file that is missing, truncated or altered (its SHA-256 differs from the one
recorded at export), that cannot be parsed, or parameters that are not finite, give one
`PretrainedError` line naming the file (the CLI prints it and exits with code 2).

    >>> import unroll
    >>> model = unroll.load("aerial")            # doctest: +SKIP
    >>> restored, kernel = model.deblur(image)   # doctest: +SKIP

`export(workdir, name)` writes a trained workdir's final checkpoint in this form
(`experiments.export_pretrained`), each file atomically and the checksums last.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from unroll import atomic
from unroll.config import Config, ConfigError

ROOT = Path(__file__).parent
NAMES = ("aerial", "motion")
CHECKSUMS = "SHA256SUMS"
REINSTALL = "a damaged installation: reinstall unroll"


class PretrainedError(ConfigError):
    """An unknown or damaged packaged model; the message names it."""


def available() -> list[str]:
    """The packaged models present in this installation."""
    return [name for name in NAMES if (ROOT / name / "params.npz").is_file()]


def _flat(params) -> dict[str, object]:
    import jax  # not at the top: the CLI reads a shipped config.json without importing jax

    return {jax.tree_util.keystr(path, simple=True, separator="/"): x
            for path, x in jax.tree_util.tree_flatten_with_path(params)[0]}


def load_config(name: str) -> Config:
    """The configuration the packaged model `name` was trained with (config.json, verified)."""
    path = _folder(name) / "config.json"
    try:
        return Config.from_dict(_read_json(path))
    except PretrainedError:
        raise
    except ConfigError as exc:
        raise PretrainedError(f"{path}: {exc} ({REINSTALL})") from None


def load(name: str):
    """The packaged model `name` as an `unroll.inference.Model` (step: its training step)."""
    import jax

    from unroll.inference.model import Model
    from unroll.models import registry

    folder = _folder(name)
    verify(folder, ("config.json", "params.npz", "metrics.json"))  # what loading reads
    config = load_config(name).validate()
    graphdef, template = registry.build_split(config)
    arrays = _read_params(folder / "params.npz")
    names = _flat(template)
    if set(arrays) != set(names):
        missing, extra = sorted(set(names) - set(arrays)), sorted(set(arrays) - set(names))
        raise PretrainedError(f"{folder / 'params.npz'} does not fit its config.json (missing "
                              f"{missing[:3]}, unexpected {extra[:3]})")
    leaves = []
    for key, leaf in names.items():
        if arrays[key].shape != leaf.shape:
            raise PretrainedError(f"{folder / 'params.npz'}: {key} has shape {arrays[key].shape}, "
                                  f"config.json needs {leaf.shape}")
        if not np.all(np.isfinite(arrays[key])):
            raise PretrainedError(f"{folder / 'params.npz'}: {key} holds values that are not finite "
                                  f"({REINSTALL})")
        leaves.append(jax.numpy.asarray(arrays[key], leaf.dtype))
    params = jax.tree.unflatten(jax.tree.structure(template), leaves)
    metrics = _read_json(folder / "metrics.json")
    return Model(config, graphdef, params, metrics.get("step"))


def metrics(name: str) -> dict:
    """The test scores recorded with the packaged model `name`."""
    return _read_json(_folder(name) / "metrics.json")


def export(workdir, name: str, out_root=ROOT, card=None) -> Path:
    """Write `workdir`'s final checkpoint as the packaged model `name` under `out_root`: its config,
    parameters (float32), the metrics of its final evaluation (the newest save, not the best on
    the test set: choosing by test score would flatter it) with, when the workdir has one, the
    table of `--mode=eval --noise_levels` (`eval/noise_levels.json`), with `card(config, metrics) -> str`
    its MODEL_CARD.md, and last the SHA-256 of each (`SHA256SUMS`). Each file is written atomically."""
    from unroll.checkpoint import Checkpoints

    workdir = Path(workdir)
    with Checkpoints(workdir) as checkpoints:
        config = checkpoints.saved_config("latest")
        if config is None:
            raise PretrainedError(f"no checkpoint in {workdir}: train there first")
        _, params, step = checkpoints.restore_model("latest")
    folder = Path(out_root) / name
    (folder / CHECKSUMS).unlink(missing_ok=True)  # a half-replaced model never looks verified
    with atomic.writing(folder / "params.npz") as tmp:
        np.savez_compressed(tmp, **{k: np.asarray(v, np.float32) for k, v in _flat(params).items()})
    metrics_path = workdir / "metrics.json"
    scores = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    scores.update(step=step, train_dir=config.train_dir, test_dir=config.test_dir)
    levels_path = workdir / "eval" / "noise_levels.json"  # written by --mode=eval --noise_levels
    if levels_path.is_file():
        scores["noise_levels"] = json.loads(levels_path.read_text())["levels"]
    # Folders and worker counts of the training machine mean nothing elsewhere: evaluation of a
    # shipped model defaults to the built-in test photographs (--test_dir chooses others).
    config.train_dir, config.test_dir, config.remat, config.num_workers = "", "", False, 0
    atomic.write_text(folder / "config.json", json.dumps(config.to_dict(), indent=1) + "\n")
    atomic.write_text(folder / "metrics.json", json.dumps(scores, indent=1) + "\n")
    if card is not None:
        atomic.write_text(folder / "MODEL_CARD.md", card(config, scores))
    write_checksums(folder)
    return folder


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksums(folder) -> Path:
    """Record the SHA-256 of every file of a packaged model's `folder` in `folder/SHA256SUMS`."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != CHECKSUMS
                   and not p.name.startswith("."))
    atomic.write_text(folder / CHECKSUMS, "".join(f"{_sha256(p)}  {p.name}\n" for p in files))
    return folder / CHECKSUMS


def checksums(folder) -> dict[str, str]:
    """{file name: SHA-256} recorded in `folder/SHA256SUMS`; PretrainedError when it is missing or
    cannot be read."""
    path = Path(folder) / CHECKSUMS
    try:
        lines = path.read_text().splitlines()
        recorded = dict(reversed(line.split(maxsplit=1)) for line in lines if line.strip())
    except FileNotFoundError:
        raise PretrainedError(f"{path} is missing ({REINSTALL})") from None
    except (OSError, ValueError) as exc:
        raise PretrainedError(f"{path} cannot be read ({type(exc).__name__}; {REINSTALL})") from None
    if not recorded or not all(len(h) == 64 for h in recorded.values()):
        raise PretrainedError(f"{path} is not a list of SHA-256 checksums ({REINSTALL})")
    return {name.lstrip("*"): digest for name, digest in recorded.items()}


def verify(folder, names=None):
    """Check the files `names` (default: all that SHA256SUMS lists) of a packaged model's `folder`
    against their recorded SHA-256; PretrainedError naming the first that is missing or differs."""
    folder = Path(folder)
    recorded = checksums(folder)
    for name in names or recorded:
        path = folder / name
        if name not in recorded:
            raise PretrainedError(f"{path} has no checksum in {folder / CHECKSUMS} ({REINSTALL})")
        if not path.is_file():
            raise PretrainedError(f"{path} is missing ({REINSTALL})")
        if _sha256(path) != recorded[name]:
            raise PretrainedError(f"{path} does not match its SHA-256 in {CHECKSUMS} (truncated or "
                                  f"altered; {REINSTALL})")


def _folder(name: str) -> Path:
    if name not in NAMES:
        raise PretrainedError(f"unknown pretrained model {name!r}: one of {', '.join(NAMES)}")
    folder = ROOT / name
    if not folder.is_dir() or not any(folder.iterdir()):
        raise PretrainedError(f"pretrained model {name!r} is missing from {folder} ({REINSTALL})")
    return folder


def _read_json(path: Path) -> dict:
    """A verified JSON object of a packaged model."""
    verify(path.parent, [path.name])
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PretrainedError(f"{path} cannot be read ({type(exc).__name__}; {REINSTALL})") from None
    if not isinstance(found, dict):
        raise PretrainedError(f"{path} is not a JSON object ({REINSTALL})")
    return found


def _read_params(path: Path) -> dict:
    try:
        with np.load(path) as stored:
            return dict(stored)
    except Exception as exc:  # noqa: BLE001 - zip, pickle and decompression errors of many kinds
        raise PretrainedError(f"{path} cannot be read ({type(exc).__name__}; {REINSTALL})") from None


def noise_section(levels: list[dict]) -> list[str]:
    """The card's table of gains at several noise levels (`--mode=eval --noise_levels`)."""
    return [
        "## Gain at each noise level\n",
        "The same test images, blurred once with a fixed seed, with white Gaussian noise of each "
        "std added (the same noise pattern per image, scaled); PSNR in dB, without alignment:\n",
        "| noise std | input PSNR | output PSNR | mean gain | worst image's gain | images below input |",
        "|---:|---:|---:|---:|---:|---:|",
        *(f"| {r['noise']:g} | {r['psnr_input']:.2f} | {r['psnr']:.2f} | {r['gain']:+.2f} | "
          f"{r['worst_gain']:+.2f} | {r['below_input']} of {r['num_images']} |" for r in levels),
        "",
    ]
