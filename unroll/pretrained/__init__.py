"""Networks shipped with the package, loadable by name with no training and no network access.

Each lives in `unroll/pretrained/<name>/`: `config.json` (the `Config` it was trained with),
`params.npz` (one array per parameter, named by its path in the parameter tree), `metrics.json`
(its test scores) and `MODEL_CARD.md` (data, degradation, command, budget, scores).

    >>> import unroll
    >>> model = unroll.load("aerial")            # doctest: +SKIP
    >>> restored, kernel = model.deblur(image)   # doctest: +SKIP

`export(workdir, name)` writes a trained workdir's best checkpoint in this form (`experiments.export`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from unroll.config import Config, ConfigError

ROOT = Path(__file__).parent
NAMES = ("aerial", "motion")


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
    folder = _folder(name)
    return Config.from_dict(json.loads((folder / "config.json").read_text()))


def load(name: str):
    """The packaged model `name` as an `unroll.inference.Model` (step: its training step)."""
    import jax

    from unroll.inference.model import Model
    from unroll.models import registry

    folder = _folder(name)
    config = load_config(name).validate()
    graphdef, template = registry.build_split(config)
    with np.load(folder / "params.npz") as stored:
        arrays = dict(stored)
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
        leaves.append(jax.numpy.asarray(arrays[key], leaf.dtype))
    params = jax.tree.unflatten(jax.tree.structure(template), leaves)
    metrics = _read_json(folder / "metrics.json")
    return Model(config, graphdef, params, metrics.get("step"))


def metrics(name: str) -> dict:
    """The test scores recorded with the packaged model `name`."""
    return _read_json(_folder(name) / "metrics.json")


def export(workdir, name: str, out_root=ROOT) -> Path:
    """Write `workdir`'s final checkpoint as the packaged model `name` under `out_root`: its config,
    parameters (float32) and the metrics of its final evaluation (the newest save, not the best on
    the test set: choosing by test score would flatter it)."""
    from unroll.checkpoint import Checkpoints

    workdir = Path(workdir)
    with Checkpoints(workdir) as checkpoints:
        config = checkpoints.saved_config("latest")
        if config is None:
            raise PretrainedError(f"no checkpoint in {workdir}: train there first")
        _, params, step = checkpoints.restore_model("latest")
    folder = Path(out_root) / name
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "params.npz",
                        **{k: np.asarray(v, np.float32) for k, v in _flat(params).items()})
    scores = _read_json(workdir / "metrics.json")
    scores.update(step=step, train_dir=config.train_dir, test_dir=config.test_dir)
    # Folders and worker counts of the training machine mean nothing elsewhere: evaluation of a
    # shipped model defaults to the built-in test photographs (--test_dir chooses others).
    config.train_dir, config.test_dir, config.remat, config.num_workers = "", "", False, 0
    (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=1) + "\n")
    (folder / "metrics.json").write_text(json.dumps(scores, indent=1) + "\n")
    return folder


def _folder(name: str) -> Path:
    if name not in NAMES:
        raise PretrainedError(f"unknown pretrained model {name!r}: one of {', '.join(NAMES)}")
    folder = ROOT / name
    if not (folder / "params.npz").is_file() or not (folder / "config.json").is_file():
        raise PretrainedError(f"pretrained model {name!r} is missing from {folder} (a damaged "
                              "installation: reinstall unroll)")
    return folder


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}
