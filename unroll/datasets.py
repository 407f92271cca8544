"""Public data sets by name: where they are on this machine, and how to get them when they are not.

`levin2009()` and `rsscn7(split)` return folders. They are looked up under `$UNROLL_DATA` when that
variable is set (then nowhere else), otherwise in `~/.cache/unroll`, then in `../shared/data` beside
the repository. `python -m experiments.prepare_data --dataset=NAME --source=FOLDER_OR_ZIP` builds a
data set's folder from its authors' download. Flags and flagfiles name data sets as `NAME:SPLIT`
(`--train_dir=rsscn7:train`, `--test_dir=rsscn7:test`); `resolve` turns such a name into its folder.

>>> import os, tempfile
>>> from unroll import datasets
>>> root = tempfile.mkdtemp()
>>> for sub in ("sharp", "kernels", "blurred"):
...     os.makedirs(os.path.join(root, "levin2009", sub))
>>> os.environ["UNROLL_DATA"] = root
>>> datasets.levin2009() == datasets.Path(root) / "levin2009"
True
>>> datasets.rsscn7("train")
Traceback (most recent call last):
...
unroll.datasets.DatasetNotFoundError: RSSCN7 (Zou et al. 2015) is not in ...: ...
>>> del os.environ["UNROLL_DATA"]
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

ENV = "UNROLL_DATA"
REPO = Path(__file__).resolve().parents[1]


class DatasetNotFoundError(FileNotFoundError):
    """A data set is not on this machine; the message says where to get it and how to prepare it."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    source: str  # where its authors publish it
    folders: tuple[str, ...]  # what a prepared copy holds
    splits: tuple[str, ...] = ()


DATASETS = {
    "rsscn7": Dataset(
        "rsscn7", "RSSCN7 (Zou et al. 2015)",
        "its authors publish it at https://github.com/palewithout/RSSCN7 (Zou et al., IEEE GRSL 2015)",
        ("train", "test"), ("train", "test")),
    "levin2009": Dataset(
        "levin2009", "Levin et al. 2009",
        "its authors publish it with their CVPR 2009 paper 'Understanding and evaluating blind "
        "deconvolution algorithms' (https://webee.technion.ac.il/people/anat.levin/)",
        ("sharp", "kernels", "blurred")),
}

# The classes of RSSCN7, as the project names them (the authors' folders are aGrass, bField, ...).
RSSCN7_CLASSES = ("field", "forest", "grass", "industry", "parking", "residential", "river_lake")
RSSCN7_TRAIN, RSSCN7_TEST = 80, 20


def roots() -> list[Path]:
    """The folders searched, in order: `$UNROLL_DATA` alone when set, else the user's cache, then the
    repository's `../shared/data`."""
    given = os.environ.get(ENV)
    if given:
        return [Path(given).expanduser()]
    return [Path.home() / ".cache" / "unroll", REPO.parent / "shared" / "data"]


def default_destination() -> Path:
    """Where `experiments.prepare_data` writes: `$UNROLL_DATA` when set, else `~/.cache/unroll`."""
    return roots()[0]


def is_complete(folder: Path, name: str) -> bool:
    return all((Path(folder) / sub).is_dir() for sub in DATASETS[name].folders)


def missing_message(name: str) -> str:
    ds = DATASETS[name]
    where = " or ".join(str(r) for r in roots())
    return (f"{ds.title} is not in {where}: {ds.source}; then run python -m experiments.prepare_data "
            f"--dataset={name} --source=FOLDER_OR_ZIP")


def folder(name: str) -> Path:
    """The prepared folder of data set `name` (`rsscn7` or `levin2009`).

    Raises `DatasetNotFoundError` (one line: where its authors publish it, and the prepare command)."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}: one of {', '.join(DATASETS)}")
    for root in roots():
        if is_complete(root / name, name):
            return root / name
    raise DatasetNotFoundError(missing_message(name))


def levin2009() -> Path:
    """The Levin et al. 2009 benchmark: `sharp/im{1..4}.png`, `kernels/kernel{1..8}.npy`,
    `blurred/im{i}_kernel{j}.png`."""
    return folder("levin2009")


def rsscn7(split: str = "train") -> Path:
    """RSSCN7's `train` (80 scenes per class) or `test` (20 per class) folder, one subfolder per class."""
    if split not in DATASETS["rsscn7"].splits:
        raise ValueError(f"RSSCN7 split must be 'train' or 'test', got {split!r}")
    return folder("rsscn7") / split


def resolve(text: str) -> str:
    """`NAME` or `NAME:SPLIT` of a known data set -> its folder; anything else is returned unchanged.

    >>> resolve("/data/AID"), resolve("builtin")
    ('/data/AID', 'builtin')
    """
    name, _, split = str(text).partition(":")
    if name not in DATASETS:
        return text
    if name == "rsscn7":
        return str(rsscn7(split or "train"))
    if split:
        raise ValueError(f"{text!r}: {name} has no splits")
    return str(folder(name))
