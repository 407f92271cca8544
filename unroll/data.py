"""Data pipeline: image sources, on-the-fly degradation and grain datasets for training and evaluation.

Sources (random-access, `len` and `[i]`, usable by `grain.MapDataset.source`):
  * `ImageFolder(root)`: PNG / JPEG / TIFF files found recursively under `root`. When every image
    sits in a first-level subfolder (the WHU-RS19 / AID layout `root/ClassName/img.jpg`), the
    subfolder is the class: `label` is its index in the sorted class names, else `label` is -1.
  * `PairedFolder(root)`: `root/blur/`, `root/sharp/` matched by relative path without suffix, and an
    optional `root/kernels/` of ground-truth kernels `<same stem>.npy`.
  * `builtin_samples(split)`: real photographs bundled inside scikit-image's package directory, read
    straight from that directory with Pillow (never through `skimage.data`'s pooch fetcher, so the
    network is never touched). Fixed split:
      train (10): astronaut, camera, coffee, rocket, brick, grass, gravel, motorcycle_left,
                  hubble_deep_field, ihc (immunohistochemistry micrograph);
      test (3):   chelsea, coins, moon.
    camera, brick, grass, gravel, coins and moon are grayscale; with `channels=3` they are replicated.

Decoding (`load_image`): TIFF with tifffile (through `unroll.raster.read_tiff_array`), everything
else with Pillow; uint8 / 255, uint16 / 65535 (other unsigned ints by their maximum), int8 / int16 by
their dtype range ((x - min) / (max - min), as `unroll.raster`'s "dtype" scaling), floats kept as
they are (must lie in [0, 1]). Bands: `channels` may be any count C >= 1 (1 gray and 3 RGB are the
usual; TIFF rasters may hold any number of bands, planar or interleaved). A file with exactly C bands
is used as is. Otherwise only these conversions exist: an alpha band (Pillow's LA / RGBA, a TIFF
ExtraSamples alpha) is dropped, not composited (compositing would invent a background colour that
the scene never had); then, for C = 3, gray is replicated and for C = 1, RGB becomes BT.601 luminance
0.299 R + 0.587 G + 0.114 B. Any other band count (a 5-band scene for an RGB model, RGB + NIR without
an alpha declaration, ...) is a `DataError` naming the file and both counts; the sources check it
from the headers when they are built. EXIF orientation is ignored (pixels are used as stored, so
header sizes and decoded arrays always agree).

Degradation `g = h * u + n` (paper eq. 1), computed on the host in numpy (`blur_host`, the same
symmetric-boundary convolution as `unroll.ops.blur(..., "symmetric")`, so grain workers never call
JAX): `h` an isotropic Gaussian `kernel_size`^2 with sigma ~ U[sigma_range] or, with probability
`motion_prob`, a random camera-shake kernel; `n` white Gaussian noise of std `noise`. The result is
NOT clipped to [0, 1]: the model has no clipping, and keeping it makes
`blurred == ops.blur(sharp, kernel) + n` hold exactly for the recorded kernel.

Memory: sources read image sizes from the file headers up front (cheap validation) and decode pixels
on access; decoded images are cached in memory when the whole set fits in `AUTO_CACHE_BYTES`
(float32), so the built-in set and small folders decode once while AID-sized folders stream.

Bad input raises `DataError` (a `ValueError`) naming the file or folder; with `skip_bad=True` the
problem becomes a `DataWarning` naming the skipped file, but an empty result is still an error.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import importlib.util
import os
import warnings
import zlib
from pathlib import Path
from typing import Any, Sequence

import grain
import numpy as np
import tifffile
from PIL import Image
from scipy.signal import fftconvolve

from unroll import kernels as _kernels
from unroll import raster as _raster

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_TIFF_SUFFIXES = (".tif", ".tiff")
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as Pillow's "L" conversion
AUTO_CACHE_BYTES = 1 << 30  # cache decoded images when the whole set needs at most 1 GiB (float32)
_FLOAT_TOLERANCE = 1e-3  # float images may overshoot [0, 1] by this much (rounding), then are clipped

BUILTIN_TRAIN = ("astronaut.png", "camera.png", "coffee.png", "rocket.jpg", "brick.png", "grass.png",
                 "gravel.png", "motorcycle_left.png", "hubble_deep_field.jpg", "ihc.png")
BUILTIN_TEST = ("chelsea.png", "coins.png", "moon.png")


class DataError(ValueError):
    """A data folder or file is missing, unreadable or unusable (the message names it)."""


class DataWarning(UserWarning):
    """A bad file was skipped because the caller asked for `skip_bad=True`."""


def _problem(message: str, skip_bad: bool):
    """Raise `message` as a DataError, or warn that the file it names is skipped."""
    if not skip_bad:
        raise DataError(message)
    warnings.warn(f"skipping: {message}", DataWarning, stacklevel=3)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# ----------------------------------------------------------------------------------------------------
# Decoding and saving single images.


def _check_channels(channels: int):
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
        raise ValueError(f"channels must be a positive integer (1 gray, 3 RGB), got {channels!r}")


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in _TIFF_SUFFIXES


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What a file's header says: size, and the bands `load_image` decodes (last one alpha?)."""

    height: int
    width: int
    bands: int
    alpha: bool


def image_info(path) -> ImageInfo:
    """Size and band count from the file header, without decoding the pixels."""
    path = Path(path)
    try:
        if _is_tiff(path):
            with tifffile.TiffFile(path) as tif:
                return _tiff_info(path, tif.pages.first)
        with Image.open(path) as im:
            width, height = im.size
            return ImageInfo(int(height), int(width), *_pillow_bands(im))
    except Exception as exc:  # noqa: BLE001 - any reader failure means an unusable file
        raise DataError(f"cannot read image header of {path}: {_first_line(exc)}") from exc


def image_size(path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    info = image_info(path)
    return info.height, info.width


# Pillow modes: (bands after decoding, whether the last band is alpha).
_PILLOW_BANDS = {"1": (1, False), "L": (1, False), "I": (1, False), "F": (1, False),
                 "LA": (2, True), "PA": (4, True), "RGBA": (4, True)}


def _pillow_bands(im) -> tuple[int, bool]:
    mode = im.mode
    if mode == "P":
        return (4, True) if "transparency" in im.info else (3, False)
    if mode.startswith("I;16"):
        return 1, False
    return _PILLOW_BANDS.get(mode, (3, False))  # RGB, and CMYK / YCbCr / ... converted to RGB


def _tiff_info(path: Path, page) -> ImageInfo:
    height, width = int(page.imagelength), int(page.imagewidth)
    photometric = page.photometric
    if photometric == tifffile.PHOTOMETRIC.PALETTE:
        return ImageInfo(height, width, 3, False)
    if photometric not in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.MINISWHITE,
                           tifffile.PHOTOMETRIC.RGB):
        with Image.open(path) as im:  # decoded by Pillow
            return ImageInfo(height, width, *_pillow_bands(im))
    alpha = bool(page.extrasamples) and int(page.extrasamples[-1]) in (1, 2)
    return ImageInfo(height, width, int(page.samplesperpixel), alpha)


def check_bands(path: Path, bands: int, alpha: bool, channels: int):
    """DataError unless `to_channels` can turn `bands` into `channels` (see the module doc)."""
    color = bands - 1 if alpha else bands
    if bands == channels or color == channels or (color in (1, 3) and channels in (1, 3)):
        return
    what = f"{bands} bands" + (" (the last is alpha)" if alpha else "")
    raise DataError(f"{path} has {what} but {channels} channel(s) were requested "
                    "(only gray, RGB and alpha convert)")


def _pillow_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        mode = im.mode
        if mode == "1":
            im = im.convert("L")
        elif mode in ("P", "PA"):  # palette: expand, keeping transparency only to drop it later
            im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
        elif mode == "I":  # 16-bit PNGs may open as 32-bit signed "I"
            arr = np.asarray(im)
            if arr.min() < 0 or arr.max() > 65535:
                raise DataError(f"{path}: 32-bit integer pixels outside the 16-bit range")
            return arr.astype(np.uint16)
        elif mode not in ("L", "LA", "RGB", "RGBA", "F") and not mode.startswith("I;16"):
            im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...
        return np.asarray(im)


def _tiff_pixels(path: Path) -> tuple[np.ndarray, bool]:
    """`[H, W, bands]` samples of the first page (multi-page files: the first page is the image)
    and whether the last band is alpha."""
    arr, info = _raster.read_tiff_array(path)
    photometric = info.photometric
    if info.colormap is not None:
        return np.moveaxis(info.colormap[:, arr[..., 0]], 0, -1), False  # uint16 RGB
    if photometric == tifffile.PHOTOMETRIC.MINISWHITE:
        arr = (np.iinfo(arr.dtype).max - arr) if arr.dtype.kind == "u" else 1.0 - arr
    elif photometric not in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB):
        return _with_alpha(_pillow_pixels(path))  # CMYK, YCbCr, ...: let Pillow convert to RGB
    return arr, info.alpha


def _with_alpha(arr: np.ndarray) -> tuple[np.ndarray, bool]:
    """Pillow arrays: 2 bands are gray + alpha (LA), 4 are RGBA."""
    return arr, arr.ndim == 3 and arr.shape[-1] in (2, 4)


def _to_float(arr: np.ndarray, path: Path) -> np.ndarray:
    """Scale integer pixels by their dtype's range; keep floats (which must be in [0, 1])."""
    kind = arr.dtype.kind
    if kind == "b":
        return arr.astype(np.float32)
    if kind == "u":
        return (arr.astype(np.float32) / np.float32(np.iinfo(arr.dtype).max)).astype(np.float32)
    if kind == "i" and arr.dtype.itemsize <= 2:  # int8 / int16: the dtype's range onto [0, 1]
        info = np.iinfo(arr.dtype)
        return ((arr.astype(np.float64) - info.min) / (info.max - info.min)).astype(np.float32)
    if kind == "f":
        arr = arr.astype(np.float32)
        if not np.all(np.isfinite(arr)):
            raise DataError(f"{path}: float image has NaN or infinite pixels")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -_FLOAT_TOLERANCE or hi > 1 + _FLOAT_TOLERANCE:
            raise DataError(f"{path}: float image values [{lo:.4g}, {hi:.4g}] are not in [0, 1]")
        return np.clip(arr, 0.0, 1.0)
    raise DataError(f"{path}: unsupported pixel type {arr.dtype}")


def to_channels(img: np.ndarray, channels: int, path: Path, alpha: bool) -> np.ndarray:
    """[H, W] or [H, W, B] -> [H, W, channels]: as is, or drop alpha, replicate gray, luminance."""
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise DataError(f"{path}: unsupported image shape {img.shape}")
    bands = img.shape[-1]
    check_bands(path, bands, alpha, channels)
    if bands != channels and alpha:
        img = img[:, :, :-1]
    if img.shape[-1] == channels:
        return np.ascontiguousarray(img, np.float32)
    if channels == 3:
        return np.repeat(img, 3, axis=-1)
    return np.tensordot(img, _LUMA, axes=([-1], [0]))[:, :, None].astype(np.float32)


def load_image(path, channels: int = 3) -> np.ndarray:
    """Decode one image file to float32 `[H, W, channels]` in [0, 1] (see the module docstring)."""
    _check_channels(channels)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file {path} does not exist")
    try:
        raw, alpha = _tiff_pixels(path) if _is_tiff(path) else _with_alpha(_pillow_pixels(path))
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated / corrupt data surfaces as many types
        raise DataError(f"cannot decode image {path}: {_first_line(exc)}") from exc
    return to_channels(_to_float(raw, path), channels, path, alpha)


def save_image(path, array) -> None:
    """Write `[H, W]`, `[H, W, 1]` or `[H, W, 3]` values in [0, 1] (clipped): PNG/JPEG as 8-bit,
    TIFF as 16-bit (TIFF also takes `[H, W, C]` for any C: interleaved gray bands). Parent folders
    are created. (`unroll.raster.write_raster` keeps a source TIFF's dtype, range and tags.)"""
    path = Path(path)
    arr = np.asarray(array, dtype=np.float32)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[:, :, 0]
    multiband = arr.ndim == 3 and arr.shape[-1] not in (1, 3) and path.suffix.lower() in _TIFF_SUFFIXES
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3) or multiband):
        raise ValueError(f"save_image expects [H, W], [H, W, 1] or [H, W, 3] (any [H, W, C] for "
                         f"TIFF), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"save_image: non-finite values in the image for {path}")
    arr = np.clip(arr, 0.0, 1.0)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in _TIFF_SUFFIXES:
        data = np.round(arr * 65535).astype(np.uint16)
        rgb = arr.ndim == 3 and arr.shape[-1] == 3
        tifffile.imwrite(path, data, photometric="rgb" if rgb else "minisblack",
                         planarconfig="contig" if arr.ndim == 3 else None)
    elif suffix in (".png", ".jpg", ".jpeg"):
        data = np.round(arr * 255).astype(np.uint8)
        Image.fromarray(data).save(path, **({"quality": 95} if suffix != ".png" else {}))
    else:
        raise ValueError(f"save_image: unsupported file type {suffix!r} for {path} "
                         "(use .png, .jpg, .tif)")


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
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
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


def open_source(source_or_dir=None, *, channels: int = 3, split: str = "train",
                skip_bad: bool = False):
    """None or "builtin" -> built-in `split`; a folder with blur/ and sharp/ -> PairedFolder; another
    folder -> ImageFolder; anything else is taken as a source already."""
    if source_or_dir is None or (isinstance(source_or_dir, str) and source_or_dir in ("", "builtin")):
        return builtin_samples(split, channels)
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


# ----------------------------------------------------------------------------------------------------
# Degradation g = h * u + n (host side, numpy).


def blur_host(u: np.ndarray, h: np.ndarray) -> np.ndarray:
    """`[H, W, C]` image convolved with a `[kh, kw]` kernel, symmetric boundary, same size.

    Equals `unroll.ops.blur(u[None], h[None], "symmetric")[0]`: pad by half the kernel with mirrored
    edges (np.pad "symmetric" = scipy convolve2d "symm"), then keep the 'valid' FFT convolution.
    """
    kh, kw = h.shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel sizes must be odd, got {kh}x{kw}")
    if kh > u.shape[0] or kw > u.shape[1]:
        raise ValueError(f"kernel {kh}x{kw} is larger than the image {u.shape[0]}x{u.shape[1]}")
    padded = np.pad(u, ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)), mode="symmetric")
    out = fftconvolve(padded, h.astype(u.dtype)[:, :, None], mode="valid", axes=(0, 1))
    return out.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Degradation:
    """Random blur and noise: Gaussian sigma ~ U[sigma_range] (or a motion kernel with probability
    `motion_prob`), noise std `noise` (a float, or a (low, high) range sampled per image)."""

    kernel_size: int = 15
    sigma_range: tuple[float, float] = (0.2, 4.0)
    noise: float | tuple[float, float] = 0.0
    motion_prob: float = 0.0

    def __post_init__(self):
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {self.kernel_size}")
        lo, hi = self.sigma_range
        if not 0 < lo <= hi:
            raise ValueError(f"sigma_range must satisfy 0 < low <= high, got {self.sigma_range}")
        nlo, nhi = self._noise_range()
        if not 0 <= nlo <= nhi:
            raise ValueError(f"noise must be >= 0 (or a range 0 <= low <= high), got {self.noise}")
        if not 0 <= self.motion_prob <= 1:
            raise ValueError(f"motion_prob must be in [0, 1], got {self.motion_prob}")

    def _noise_range(self) -> tuple[float, float]:
        if isinstance(self.noise, (tuple, list)):
            return float(self.noise[0]), float(self.noise[1])
        return float(self.noise), float(self.noise)

    def sample_kernel(self, rng: np.random.Generator) -> np.ndarray:
        if self.motion_prob > 0 and rng.random() < self.motion_prob:
            return _kernels.motion(self.kernel_size, rng)
        return _kernels.gaussian(self.kernel_size, float(rng.uniform(*self.sigma_range)))

    def __call__(self, sharp: np.ndarray, rng: np.random.Generator):
        """(blurred, kernel) for a sharp `[H, W, C]` image; the rng draws kernel, then noise."""
        kernel = self.sample_kernel(rng)
        blurred = blur_host(sharp, kernel)
        nlo, nhi = self._noise_range()
        sigma_n = nlo if nlo == nhi else float(rng.uniform(nlo, nhi))
        if sigma_n > 0:
            blurred += np.float32(sigma_n) * rng.standard_normal(blurred.shape, dtype=np.float32)
        return blurred, kernel


def _random_crop(arrays: list[np.ndarray], patch: int, rng: np.random.Generator):
    h, w = arrays[0].shape[:2]
    top, left = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
    return [a[top:top + patch, left:left + patch] for a in arrays]


def _dihedral(arrays: list[np.ndarray], rng: np.random.Generator):
    """The same random one of the 8 flips / 90-degree rotations for every array (the first two
    axes). Convolution commutes with them when the kernel gets the same transform."""
    turns, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = []
    for a in arrays:
        a = np.rot90(a, turns, axes=(0, 1))
        out.append(np.ascontiguousarray(a[:, ::-1] if flip else a))
    return out


@dataclasses.dataclass(frozen=True)
class TrainTransform:
    """grain random map: crop a patch, flip / rotate, and degrade it (or crop a given pair)."""

    patch_size: int
    degradation: Degradation
    paired: bool = False

    def __call__(self, example: dict, rng: np.random.Generator) -> dict:
        if self.paired:
            crops = _random_crop([example["blurred"], example["sharp"]], self.patch_size, rng)
            has_kernel = "kernel" in example
            out = _dihedral(crops + ([example["kernel"]] if has_kernel else []), rng)
            return dict(zip(("blurred", "sharp", "kernel"), out))
        (sharp,) = _dihedral(_random_crop([example["image"]], self.patch_size, rng), rng)
        blurred, kernel = self.degradation(sharp, rng)
        return {"blurred": blurred, "sharp": sharp, "kernel": kernel}


# ----------------------------------------------------------------------------------------------------
# Training pipeline.


def _derive_seed(*parts: int) -> int:
    """A 32-bit seed from integers (grain's shuffle needs 0 <= seed < 2**32)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _process_defaults(process_index, process_count):
    if process_index is None or process_count is None:
        import jax  # only here: the pipeline itself never needs JAX

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"need 0 <= process_index < process_count, got {process_index}, "
                         f"{process_count}")
    return int(process_index), int(process_count)


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


def _ensure_flags_parsed():
    # grain 0.2.18's mp_prefetch reads absl flags (worker profiling) and fails outside an absl app
    # (pytest, notebooks, plain scripts) before they are parsed: accept the defaults there.
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def make_train_dataset(source_or_dir=None, *, patch_size: int, batch_size: int,
                       sigma_range=(0.2, 4.0), kernel_size: int = 15, noise=0.0,
                       motion_prob: float = 0.0, seed: int = 0, channels: int = 3,
                       process_index: int | None = None, process_count: int | None = None,
                       num_workers: int = 0, num_threads: int = 2, prefetch: int = 4,
                       skip_bad: bool = False) -> grain.IterDataset:
    """Infinite, seeded, checkpointable iterator of host batches for this process.

    Each batch is a dict of numpy arrays with a leading axis of `batch_size // process_count`:
    "blurred", "sharp" `[B, P, P, C]` and "kernel" `[B, k, k]` (for a PairedFolder: its kernels, or
    no "kernel" key when it has none). Pipeline: the source sliced `process_index::process_count`
    (disjoint shards), shuffled with a fresh order each epoch, repeated forever, randomly cropped /
    flipped / rotated and degraded per element (grain seeds each element from `seed` and its index,
    so batches do not depend on threads or workers), batched. `iter(ds)` gives a grain
    DatasetIterator with `get_state()` / `set_state()`. `num_workers > 0` adds grain
    multiprocessing; `num_threads` / `prefetch` (in batches) configure grain's reader threads.
    """
    if patch_size < 1 or batch_size < 1:
        raise ValueError(f"patch_size and batch_size must be positive, got {patch_size}, {batch_size}")
    if kernel_size > patch_size:
        raise ValueError(f"kernel_size {kernel_size} is larger than patch_size {patch_size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    process_index, process_count = _process_defaults(process_index, process_count)
    if batch_size % process_count:
        raise ValueError(f"global batch_size {batch_size} is not divisible by process_count "
                         f"{process_count}")
    degradation = Degradation(kernel_size, tuple(sigma_range), noise, motion_prob)
    source = open_source(source_or_dir, channels=channels, split="train", skip_bad=skip_bad)
    source = _drop_small(source, patch_size, skip_bad, "patch size")
    paired = _is_paired(source)
    if paired and source.has_kernels and len({e.kernel.shape for e in source._entries}) > 1:
        raise DataError(f"kernels in {source.root / 'kernels'} have different shapes; "
                        "batches need one shape")

    ds = grain.MapDataset.source(source).slice(slice(process_index, None, process_count))
    if len(ds) == 0:
        raise DataError(f"process {process_index} of {process_count} gets no images from "
                        f"{source.root} ({len(source)} images)")
    ds = ds.shuffle(seed=_derive_seed(seed, 0)).repeat(None)  # shuffle reseeds every epoch
    ds = ds.random_map(TrainTransform(patch_size, degradation, paired),
                       seed=_derive_seed(seed, 1, process_index))
    ds = ds.batch(batch_size // process_count, drop_remainder=True)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                              prefetch_buffer_size=prefetch))
    if num_workers > 0:
        _ensure_flags_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return it


# ----------------------------------------------------------------------------------------------------
# Evaluation sets.


def example_rng(name: str, seed: int) -> np.random.Generator:
    """The generator of an evaluation image: a stable hash of its relative path and the base seed,
    so the same image gets the same blur and noise in every run and in any subset or order."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def _center_crop(arrays: list[np.ndarray], crop) -> list[np.ndarray]:
    if crop is None:
        return arrays
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    h, w = arrays[0].shape[:2]
    ch, cw = min(ch, h), min(cw, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return [np.ascontiguousarray(a[top:top + ch, left:left + cw]) for a in arrays]


class EvalSet(collections.abc.Sequence):
    """Whole evaluation images, one example at a time (sizes differ, so no batching).

    Examples: "blurred", "sharp" `[H, W, C]`, "kernel" `[k, k]` (absent for a paired folder without
    kernels/), "name" (relative path), "label" (-1 when none), "class_name" ("" when none).
    Each access recomputes the example deterministically (decoded images may be cached).
    """

    def __init__(self, source, degradation: Degradation, seed: int, center_crop):
        self.source, self.degradation, self.seed, self.center_crop = (
            source, degradation, seed, center_crop)

    def __len__(self) -> int:
        return len(self.source)

    @property
    def names(self) -> list[str]:
        return self.source.names

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        example = self.source[index % len(self)]
        classes = getattr(self.source, "class_names", ())
        label = int(example["label"])
        out = {"name": example["name"], "label": label,
               "class_name": classes[label] if label >= 0 else ""}
        if "image" in example:
            (sharp,) = _center_crop([example["image"]], self.center_crop)
            blurred, kernel = self.degradation(sharp, example_rng(example["name"], self.seed))
            out.update(blurred=blurred, sharp=sharp, kernel=kernel)
        else:
            blurred, sharp = _center_crop([example["blurred"], example["sharp"]], self.center_crop)
            out.update(blurred=blurred, sharp=sharp)
            if "kernel" in example:
                out["kernel"] = example["kernel"]
        return out


def make_eval_dataset(source_or_dir=None, *, kernel_size: int = 15, sigma_range=(0.2, 4.0),
                      noise=0.0, motion_prob: float = 0.0, seed: int = 0, channels: int = 3,
                      center_crop: int | tuple[int, int] | None = None,
                      process_index: int = 0, process_count: int = 1,
                      skip_bad: bool = False) -> EvalSet:
    """A fixed evaluation set (None -> built-in "test" split; a folder with blur/ and sharp/ is
    read as pairs, others are degraded with a per-image fixed blur and noise, see `example_rng`).

    By default every process sees the whole set; pass `process_index`, `process_count` to shard it.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"need 0 <= process_index < process_count, got {process_index}, "
                         f"{process_count}")
    degradation = Degradation(kernel_size, tuple(sigma_range), noise, motion_prob)
    source = open_source(source_or_dir, channels=channels, split="test", skip_bad=skip_bad)
    if center_crop is not None:
        crop = (center_crop, center_crop) if isinstance(center_crop, int) else center_crop
        if min(crop) < kernel_size:
            raise ValueError(f"center_crop {center_crop} is smaller than kernel_size {kernel_size}")
    if not _is_paired(source):  # synthetic blur needs images at least as large as the kernel
        source = _drop_small(source, kernel_size, skip_bad, "kernel size")
    if process_count > 1:
        shard = list(range(process_index, len(source), process_count))
        if not shard:
            raise DataError(f"process {process_index} of {process_count} gets no images from "
                            f"{source.root}")
        source = source.select(shard)
    return EvalSet(source, degradation, seed, center_crop)


__all__ = [
    "AUTO_CACHE_BYTES", "BUILTIN_TEST", "BUILTIN_TRAIN", "DataError", "DataWarning", "Degradation",
    "EvalSet", "IMAGE_SUFFIXES", "ImageFolder", "ImageInfo", "PairedFolder", "TrainTransform",
    "blur_host", "builtin_samples", "check_bands", "example_rng", "image_info", "image_size",
    "load_image", "make_eval_dataset", "make_train_dataset", "open_source", "save_image",
    "to_channels",
]
