"""Image sources: random-access sequences (`len`, `[i]`) of decoded images, usable by grain.

  * `ImageFolder(root)`: PNG / JPEG / TIFF files found recursively under `root`. When every image
    sits in a first-level subfolder (the WHU-RS19 / AID layout `root/ClassName/img.jpg`), the
    subfolder is the class: `label` is its index in the sorted class names, else `label` is -1.
  * `PairedFolder(root)`: `root/blur/`, `root/sharp/` matched by relative path without suffix, and an
    optional `root/kernels/` of ground-truth kernels `<same stem>.npy`.
  * `builtin_samples(split)`: real photographs bundled with scikit-image (see the package docstring).
  * `ConcatSource(parts)`: several unpaired sources as one (`open_source("builtin,/data/a")`).

Sources read image sizes from the file headers up front (cheap validation) and decode pixels on
access; decoded images are cached in memory when the whole set fits in `AUTO_CACHE_BYTES` (float32).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import importlib.util
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from unroll import datasets
from unroll.data.images import (
    IMAGE_SUFFIXES,
    DataError,
    _check_channels,
    _first_line,
    _problem,
    check_bands,
    image_info,
    load_image,
)

AUTO_CACHE_BYTES = 1 << 30  # cache decoded images when the whole set needs at most 1 GiB (float32)

BUILTIN_TRAIN = ("astronaut.png", "camera.png", "coffee.png", "rocket.jpg", "brick.png", "grass.png",
                 "gravel.png", "motorcycle_left.png", "hubble_deep_field.jpg", "ihc.png")
BUILTIN_TEST = ("chelsea.png", "coins.png", "moon.png")

# ----------------------------------------------------------------------------------------------------
# Sources.


def _check_dir(root: Path, what: str):
    if not root.exists():
        raise DataError(f"{what} {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{what} {root} is not a directory")


def _scan(root: Path, what: str) -> list[str]:
    """Sorted relative posix paths of the image files under `root` (hidden entries ignored)."""
    _check_dir(root, what)
    found, others = [], 0
    visited = set()  # real folders already walked: a symlink loop is walked once, not forever
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and os.path.realpath(os.path.join(dirpath, d)) not in visited)
        for name in filenames:
            if name.startswith("."):
                continue
            if name.lower().endswith(IMAGE_SUFFIXES):
                found.append((Path(dirpath) / name).relative_to(root).as_posix())
            else:
                others += 1
    if not found:
        detail = "it is empty" if others == 0 else f"only {others} other file(s)"
        raise DataError(f"no PNG/JPEG/TIFF images in {what} {root} ({detail})")
    return sorted(found)


def _header_size(path: Path, channels: int) -> tuple[int, int]:
    """(H, W) from the header, after checking that its bands convert to `channels`."""
    info = image_info(path)
    check_bands(path, info.bands, info.alpha, channels)
    return info.height, info.width


def _stem(relpath: str) -> str:
    """Relative path without its suffix: the key that pairs blur/, sharp/ and kernels/ files."""
    return relpath.rsplit(".", 1)[0] if "." in relpath.rsplit("/", 1)[-1] else relpath


def _auto_cache(cache, num_pixels: int, channels: int, copies: int) -> bool:
    if cache is None:
        return num_pixels * channels * 4 * copies <= AUTO_CACHE_BYTES
    return bool(cache)


@dataclasses.dataclass(frozen=True)
class _Entry:
    name: str                      # relative path (the sharp/image file for pairs)
    path: Path                     # image (or sharp) file
    size: tuple[int, int]          # (H, W) from the header
    label: int = -1
    blur_path: Path | None = None  # pairs only
    kernel: np.ndarray | None = None


class _Source(collections.abc.Sequence):
    """Shared machinery: a list of validated entries, decode on access, optional in-memory cache."""

    root: Path
    channels: int

    def __init__(self, entries: list[_Entry], cache: bool):
        self._entries = list(entries)
        self._cache_enabled = cache
        self._cache: dict[str, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self._entries]

    @property
    def sizes(self) -> list[tuple[int, int]]:
        return [e.size for e in self._entries]

    def path_of(self, index: int) -> Path:
        return self._entries[index].path

    def select(self, indices: Sequence[int]):
        """A copy holding only the entries at `indices` (used to drop images that are too small)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._entries = [self._entries[i] for i in indices]
        new._cache = {}
        return new

    def _pixels(self, entry: _Entry) -> dict[str, np.ndarray]:
        cached = self._cache.get(entry.name)
        if cached is not None:
            return cached
        arrays = self._decode(entry)
        for a in arrays.values():
            a.setflags(write=False)  # shared by every access: transforms must copy
        if self._cache_enabled:
            self._cache[entry.name] = arrays
        return arrays

    def _decode(self, entry: _Entry) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.select(range(len(self))[index])
        entry = self._entries[int(index)]
        example: dict[str, Any] = dict(self._pixels(entry))
        example.update(name=entry.name, label=entry.label)
        if entry.kernel is not None:
            example["kernel"] = entry.kernel
        return example


class ImageFolder(_Source):
    """Sharp images under `root` (recursive): examples `{"image": [H, W, C], "name", "label"}`.

    labels: None (auto) uses first-level subfolders as classes when every image lies inside one;
      True forces that (images directly in `root` are then an error); False gives label -1.
    files: optional explicit relative paths to use instead of scanning.
    cache: None (auto: if the decoded set fits `AUTO_CACHE_BYTES`), True or False.
    """

    def __init__(self, root, channels: int = 3, *, labels: bool | None = None,
                 skip_bad: bool = False, cache: bool | None = None,
                 files: Sequence[str] | None = None):
        _check_channels(channels)
        self.root, self.channels = Path(root), channels
        if files is None:
            files = _scan(self.root, "image folder")
        else:
            _check_dir(self.root, "image folder")
        use_labels = labels
        if labels is None:
            use_labels = all("/" in f for f in files)
        self.class_names: tuple[str, ...] = ()
        if use_labels:
            top = [f for f in files if "/" not in f]
            if top:
                raise DataError(f"labels=True but {self.root / top[0]} is not inside a class folder")
            self.class_names = tuple(sorted({f.split("/", 1)[0] for f in files}))
        class_index = {c: i for i, c in enumerate(self.class_names)}

        entries = []
        for rel in files:
            path = self.root / rel
            try:
                if not path.is_file():
                    raise DataError(f"image file {path} does not exist")
                size = _header_size(path, channels)
            except DataError as exc:
                _problem(str(exc), skip_bad)
                continue
            label = class_index[rel.split("/", 1)[0]] if use_labels else -1
            entries.append(_Entry(name=rel, path=path, size=size, label=label))
        if not entries:
            raise DataError(f"no usable images in image folder {self.root}")
        pixels = sum(h * w for h, w in (e.size for e in entries))
        super().__init__(entries, _auto_cache(cache, pixels, channels, 1))

    def _decode(self, entry):
        return {"image": load_image(entry.path, self.channels)}


def _load_kernel(path: Path) -> np.ndarray:
    try:
        k = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cannot read kernel {path}: {_first_line(exc)}") from exc
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise DataError(f"kernel {path} must be 2-D with odd sizes, got shape {k.shape}")
    if k.dtype.kind not in "uif" or not np.all(np.isfinite(k)):
        raise DataError(f"kernel {path} must hold finite numbers, got dtype {k.dtype}")
    if np.any(k < 0) or k.sum() <= 0:
        raise DataError(f"kernel {path} must be nonnegative with a positive sum")
    return (k / k.sum()).astype(np.float32)  # stored kernels may be scaled: normalise to sum 1


class PairedFolder(_Source):
    """Pairs `root/blur/X.*` with `root/sharp/X.*` (same relative path without suffix) and, if the
    folder `root/kernels/` exists, with `root/kernels/X.npy` (then required for every pair).

    Examples: `{"blurred", "sharp": [H, W, C], "kernel": [kh, kw] (if kernels/), "name", "label": -1}`.
    """

    def __init__(self, root, channels: int = 3, *, skip_bad: bool = False,
                 cache: bool | None = None):
        _check_channels(channels)
        self.root, self.channels = Path(root), channels
        _check_dir(self.root, "paired folder")
        blur = self._index(self.root / "blur", skip_bad)
        sharp = self._index(self.root / "sharp", skip_bad)
        kernel_dir = self.root / "kernels"
        kernel_files = self._kernel_index(kernel_dir) if kernel_dir.is_dir() else None
        self.has_kernels = kernel_files is not None

        for stem in sorted(set(blur) - set(sharp)):
            _problem(f"{self.root / 'blur' / blur[stem]} has no partner in {self.root / 'sharp'}",
                     skip_bad)
        for stem in sorted(set(sharp) - set(blur)):
            _problem(f"{self.root / 'sharp' / sharp[stem]} has no partner in {self.root / 'blur'}",
                     skip_bad)
        if kernel_files is not None:
            for stem in sorted(set(kernel_files) - (set(blur) & set(sharp))):
                _problem(f"kernel {kernel_dir / kernel_files[stem]} has no blur/sharp pair", skip_bad)

        entries = []
        for stem in sorted(set(blur) & set(sharp)):
            try:
                entries.append(self._entry(stem, blur[stem], sharp[stem], kernel_files))
            except DataError as exc:
                _problem(str(exc), skip_bad)
        if not entries:
            raise DataError(f"no usable blur/sharp pairs in paired folder {self.root}")
        pixels = sum(h * w for h, w in (e.size for e in entries))
        super().__init__(entries, _auto_cache(cache, pixels, channels, 2))

    def _index(self, folder: Path, skip_bad: bool) -> dict[str, str]:
        """stem -> relative file name; two files with one stem (a.png, a.jpg) are ambiguous."""
        index: dict[str, str] = {}
        for rel in _scan(folder, "folder"):
            stem = _stem(rel)
            if stem in index:
                _problem(f"{folder / rel} and {folder / index.pop(stem)} share the name {stem!r}",
                         skip_bad)
                continue
            index[stem] = rel
        return index

    @staticmethod
    def _kernel_index(folder: Path) -> dict[str, str]:
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.npy")
                       if not p.name.startswith("."))
        return {f[:-4]: f for f in files}

    def _entry(self, stem, blur_rel, sharp_rel, kernel_files) -> _Entry:
        blur_path, sharp_path = self.root / "blur" / blur_rel, self.root / "sharp" / sharp_rel
        size = _header_size(sharp_path, self.channels)
        blur_size = _header_size(blur_path, self.channels)
        if size != blur_size:
            raise DataError(f"{blur_path} is {blur_size[0]}x{blur_size[1]} but its partner "
                            f"{sharp_path} is {size[0]}x{size[1]}")
        kernel = None
        if kernel_files is not None:
            if stem not in kernel_files:
                raise DataError(f"pair {sharp_path} has no kernel {self.root / 'kernels' / stem}.npy")
            kernel = _load_kernel(self.root / "kernels" / kernel_files[stem])
            if kernel.shape[0] > size[0] or kernel.shape[1] > size[1]:
                raise DataError(f"kernel {self.root / 'kernels' / kernel_files[stem]} is "
                                f"{kernel.shape[0]}x{kernel.shape[1]}, larger than its image "
                                f"{sharp_path} ({size[0]}x{size[1]})")
        return _Entry(name=sharp_rel, path=sharp_path, size=size, blur_path=blur_path, kernel=kernel)

    def _decode(self, entry):
        return {"blurred": load_image(entry.blur_path, self.channels),
                "sharp": load_image(entry.path, self.channels)}


def _skimage_data_dir() -> Path:
    # Locate the package without importing it (and without skimage.data's pooch fetcher).
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the built-in samples need scikit-image installed")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def builtin_samples(split: str = "train", channels: int = 3) -> ImageFolder:
    """Real photographs bundled with scikit-image (offline): split "train" (10), "test" (3), "all"."""
    files = {"train": BUILTIN_TRAIN, "test": BUILTIN_TEST, "all": BUILTIN_TRAIN + BUILTIN_TEST}
    if split not in files:
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    root = _skimage_data_dir()
    missing = [f for f in files[split] if not (root / f).is_file()]
    if missing:
        raise DataError(f"built-in sample {root / missing[0]} is missing from scikit-image")
    return ImageFolder(root, channels, labels=False, cache=True, files=files[split])


class ConcatSource(_Source):
    """Unpaired sources read as one: entries in order, names prefixed `<index>_<folder name>/` so
    they stay unique (two folders may both hold `img0.png`), labels -1 (each part's classes mean
    nothing across parts). Each entry is decoded by its own part; the cache is the concatenation's.
    """

    def __init__(self, parts: Sequence[_Source], tags: Sequence[str] | None = None,
                 root=None, cache: bool | None = None):
        if not parts:
            raise DataError("ConcatSource needs at least one source")
        tags = tags if tags is not None else [Path(p.root).name for p in parts]
        self.channels = parts[0].channels
        self.root = Path(root) if root is not None else Path(parts[0].root)
        self.class_names: tuple[str, ...] = ()
        self._parts = list(parts)
        self._origin: dict[str, tuple[int, _Entry]] = {}  # new name -> (part index, part's entry)
        entries = []
        for i, (part, tag) in enumerate(zip(parts, tags)):
            if _is_paired(part):
                raise DataError(f"{part.root} holds blur/ and sharp/ pairs, which cannot be combined "
                                "with other folders in a comma-separated list")
            if part.channels != self.channels:
                raise DataError(f"{part.root} gives {part.channels} channels, {parts[0].root} gives "
                                f"{self.channels}")
            for e in part._entries:
                entry = dataclasses.replace(e, name=f"{i}_{tag}/{e.name}", label=-1)
                self._origin[entry.name] = (i, e)
                entries.append(entry)
        pixels = sum(h * w for h, w in (e.size for e in entries))
        super().__init__(entries, _auto_cache(cache, pixels, self.channels, 1))

    def _decode(self, entry):
        part, original = self._origin[entry.name]
        return self._parts[part]._decode(original)


def _dataset_folder(text: str) -> str:
    """A data set's name (`rsscn7:train`, see `unroll.datasets`) -> its folder; a path unchanged."""
    try:
        return datasets.resolve(text)
    except ValueError as exc:
        raise DataError(str(exc)) from None


def _open_list(text: str, channels: int, split: str, skip_bad: bool) -> ConcatSource:
    """Comma-separated folders (`builtin` = the built-in `split`) as one `ConcatSource`."""
    items = [item.strip() for item in text.split(",")]
    if "" in items:
        raise DataError(f"empty folder name in the comma-separated list {text!r}")
    parts = [open_source(item, channels=channels, split=split, skip_bad=skip_bad) for item in items]
    tags = ["builtin" if item == "builtin" else Path(_dataset_folder(item)).name for item in items]
    return ConcatSource(parts, tags, root=text)


def open_source(source_or_dir=None, *, channels: int = 3, split: str = "train",
                skip_bad: bool = False):
    """None or "builtin" -> built-in `split`; a folder with blur/ and sharp/ -> PairedFolder; another
    folder -> ImageFolder; a comma-separated list of those (no pairs) -> ConcatSource; anything else
    is taken as a source already."""
    if source_or_dir is None or (isinstance(source_or_dir, str) and source_or_dir in ("", "builtin")):
        return builtin_samples(split, channels)
    if isinstance(source_or_dir, str) and "," not in source_or_dir:
        source_or_dir = _dataset_folder(source_or_dir)
    # A comma is a list separator unless a folder of that very name exists.
    if isinstance(source_or_dir, str) and "," in source_or_dir and not Path(source_or_dir).exists():
        return _open_list(source_or_dir, channels, split, skip_bad)
    if isinstance(source_or_dir, (str, os.PathLike)):
        root = Path(source_or_dir)
        if (root / "blur").is_dir() and (root / "sharp").is_dir():
            return PairedFolder(root, channels, skip_bad=skip_bad)
        return ImageFolder(root, channels, skip_bad=skip_bad)
    own = getattr(source_or_dir, "channels", channels)
    if own != channels:
        raise ValueError(f"the source has channels={own} but channels={channels} was requested")
    return source_or_dir


def _is_paired(source) -> bool:
    return isinstance(source, PairedFolder)


def _drop_small(source, min_size: int, skip_bad: bool, what: str):
    """Images smaller than `min_size` on a side: error, or (skip_bad) warn and drop them."""
    keep = []
    for i, (h, w) in enumerate(source.sizes):
        if min(h, w) < min_size:
            _problem(f"{source.path_of(i)} is {h}x{w}, smaller than the {what} {min_size}", skip_bad)
        else:
            keep.append(i)
    if not keep:
        raise DataError(f"no image in {source.root} is at least {min_size}x{min_size}")
    return source if len(keep) == len(source) else source.select(keep)


