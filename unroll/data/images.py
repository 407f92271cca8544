"""Decoding and saving single images (PNG, JPEG, TIFF of any band count), and the data errors.

Decoding (`load_image`): TIFF with tifffile (through `unroll.data.raster.read_tiff_array`), everything
else with Pillow; integers scaled by their dtype's range, floats kept (they must lie in [0, 1]). The
band conversions are described in the package docstring (`unroll.data`).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageOps

from unroll import atomic
from unroll.data import raster as _raster

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_TIFF_SUFFIXES = (".tif", ".tiff")
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as Pillow's "L" conversion
_FLOAT_TOLERANCE = 1e-3  # float images may overshoot [0, 1] by this much (rounding), then are clipped
SOFTWARE = "unroll"  # the Software tag / text of the files unroll writes (`written_by_unroll`)
_EXIF_ORIENTATION = 0x0112
_TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


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
            if _orientation(im) in _TURNED:
                width, height = height, width
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


def _orientation(im) -> int:
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block: pixels as stored
        return 1


def _upright(im):
    """The picture as viewers show it: EXIF orientation applied (rotations and flips)."""
    return ImageOps.exif_transpose(im) if _orientation(im) not in (0, 1) else im


def _pillow_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        im = _upright(im)
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


def load_stored(path) -> tuple[np.ndarray, bool]:
    """A PNG / JPEG / other Pillow image's samples as stored (`[H, W]` or `[H, W, bands]`, its own
    dtype, upright) and whether the last band is alpha: the input of windowed conversion
    (`to_channels(_to_float(window))`) for scenes too large to hold in float32."""
    path = Path(path)
    try:
        return _with_alpha(_pillow_pixels(path))
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cannot decode image {path}: {_first_line(exc)}") from exc


def stored_to_float(window: np.ndarray, path, channels: int, alpha: bool) -> np.ndarray:
    """A window of `load_stored` samples as `load_image` gives it: float32 `[h, w, channels]`."""
    return to_channels(_to_float(window, Path(path)), channels, Path(path), alpha)


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


def _save_png(path: Path, samples: np.ndarray, mark: bool):
    info = None
    if mark:
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text("Software", SOFTWARE)
    if samples.ndim == 3 and samples.shape[-1] == 1:
        samples = samples[:, :, 0]
    with atomic.writing(path) as tmp:
        Image.fromarray(samples).save(tmp, format="PNG", pnginfo=info)


def written_by_unroll(path) -> bool:
    """Whether `path` is a PNG / JPEG / TIFF that unroll wrote (its Software tag or text). The PNG
    text unroll writes precedes the pixels, so a file of ours cut short is still known as ours."""
    path = Path(path)
    try:
        if _is_tiff(path):
            with tifffile.TiffFile(path) as tif:
                return str(tif.pages.first.software or "").startswith(SOFTWARE)
        with Image.open(path) as im:
            software = im.info.get("Software")  # the header's text: no decoding of the pixels
            if software is None:
                software = (getattr(im, "text", None) or {}).get("Software") or im.getexif().get(0x0131)
            return str(software or "").startswith(SOFTWARE)
    except Exception:  # noqa: BLE001 - unreadable: certainly not ours to replace
        return False


def decodes_whole(path) -> bool:
    """Whether the PNG / JPEG / TIFF `path` is whole (one cut short is not): PNG and JPEG decode to
    their end; every strip or tile of a TIFF lies inside the file (a scene is not read into memory)."""
    path = Path(path)
    try:
        if _is_tiff(path):
            size = path.stat().st_size
            with tifffile.TiffFile(path) as tif:
                for page in tif.pages:
                    ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts)]
                    if not ends or max(ends) > size:
                        return False
            return True
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:  # noqa: BLE001 - truncated / corrupt data surfaces as many types
        return False


def save_image(path, array, mark: bool = False) -> None:
    """Write `[H, W]`, `[H, W, 1]`, `[H, W, 3]` or, for PNG, `[H, W, 2]` / `[H, W, 4]` (with alpha)
    values in [0, 1] (clipped): PNG/JPEG as 8-bit, TIFF as 16-bit (TIFF also takes `[H, W, C]` for
    any C: interleaved gray bands). `mark` tags the file as written by unroll (`written_by_unroll`).
    Parent folders are created; the file appears complete or not at all (`unroll.atomic`).
    (`unroll.data.raster.write_raster` keeps a source TIFF's dtype, range
    and tags.)"""
    path = Path(path)
    if isinstance(array, np.ndarray) and array.dtype == np.uint8 and path.suffix.lower() == ".png":
        _save_png(path, array, mark)  # 8-bit samples as they are (a large scene: no float copy)
        return
    arr = np.asarray(array, dtype=np.float32)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[:, :, 0]
    multiband = arr.ndim == 3 and arr.shape[-1] not in (1, 3) and path.suffix.lower() in _TIFF_SUFFIXES
    with_alpha = arr.ndim == 3 and arr.shape[-1] in (2, 4) and path.suffix.lower() == ".png"
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3) or multiband or with_alpha):
        raise ValueError(f"save_image expects [H, W], [H, W, 1] or [H, W, 3] (any [H, W, C] for "
                         f"TIFF), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"save_image: non-finite values in the image for {path}")
    arr = np.clip(arr, 0.0, 1.0)
    suffix = path.suffix.lower()
    if suffix in _TIFF_SUFFIXES:
        data = np.round(arr * 65535).astype(np.uint16)
        rgb = arr.ndim == 3 and arr.shape[-1] == 3
        with atomic.writing(path) as tmp:
            tifffile.imwrite(tmp, data, photometric="rgb" if rgb else "minisblack",
                             planarconfig="contig" if arr.ndim == 3 else None,
                             software=SOFTWARE if mark else False)
    elif suffix == ".png":
        _save_png(path, np.round(arr * 255).astype(np.uint8), mark)
    elif suffix in (".jpg", ".jpeg"):
        exif = Image.Exif()
        if mark:
            exif[0x0131] = SOFTWARE
        with atomic.writing(path) as tmp:
            Image.fromarray(np.round(arr * 255).astype(np.uint8)).save(tmp, format="JPEG", quality=95,
                                                                      exif=exif)
    else:
        raise ValueError(f"save_image: unsupported file type {suffix!r} for {path} "
                         "(use .png, .jpg, .tif)")

