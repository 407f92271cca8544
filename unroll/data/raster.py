"""GeoTIFF and multispectral TIFF rasters: read to float32 [0, 1], write back with the same dtype,
range and metadata (numpy + tifffile only; no GDAL).

`read_raster(path)` gives a `Raster`: `pixels` float32 `[H, W, bands]` in [0, 1] and everything needed
to write it back: the stored dtype, the affine scaling `stored = pixels * scale + offset` (per band),
the storage layout and the kept tags as their raw bytes. `write_raster(path, raster)` inverts the
scaling (rounding and clipping for integers) and writes the tags back byte for byte.

Scaling (`scaling=`):
  * "dtype" (default for integers): the dtype's full range, so uint8 -> x / 255 and uint16 ->
    x / 65535 (as `unroll.data.load_image`), int16 -> (x + 32768) / 65535. Integer round trips are
    exact: float32 carries 24 bits, 16-bit values need 16.
  * "minmax" (default for floats, which have no natural range): the valid pixels' minimum and
    maximum map to 0 and 1, so writing [0, 1] back keeps the data's range. For integers it is exact
    too (the range is at most 65535 steps) and stretches e.g. 12-bit data stored in uint16.
  * "auto": "dtype" for integers; for floats the identity when the valid values already lie in
    [0, 1] (as `unroll.data.load_image` reads them), else "minmax".
  `per_band=True` takes the min/max of each band separately (bands of different units); the default
  is one range for all bands, which keeps band ratios (colour) intact.

No-data: GDAL_NODATA (and NaN / infinite floats) mark invalid samples: they are left out of the
min/max, read as 0, and written back as the no-data value (NaN when there is no tag) whatever the
pixels hold there, so a deblurred scene keeps its no-data mask.

Tags: the georeferencing (ModelPixelScale 33550, ModelTiepoint 33922, ModelTransformation 34264,
GeoKeyDirectory 34735, GeoDoubleParams 34736, GeoAsciiParams 34737), GDAL_METADATA 42112,
GDAL_NODATA 42113, RPC coefficients 50844 and descriptive tags (ImageDescription, Software,
DateTime, Artist, Copyright, XMP, ICC profile, ...) are kept raw: same type, count and bytes. The
layout tags (sizes, strips/tiles, compression, sample format, photometric, ...) are rewritten from
the data; the resolution is kept as its rationals; the compression is kept when tifffile can write it
without extra codecs (none, deflate, LZMA; others are written deflate-compressed, with a warning).
Any other tag (EXIF/GPS sub-IFDs, colour maps, SMin/SMaxSampleValue, overview sub-IFDs, ...) and
any further page (overviews, masks) cannot be carried over: `read_raster` issues a `RasterWarning`
naming each of them, never drops them silently.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import tifffile

from unroll import atomic

GEO_TAGS = {33550: "ModelPixelScale", 33922: "ModelTiepoint", 34264: "ModelTransformation",
            34735: "GeoKeyDirectory", 34736: "GeoDoubleParams", 34737: "GeoAsciiParams"}
GDAL_METADATA, GDAL_NODATA = 42112, 42113
# Tags copied raw: they describe the scene or the file, not the pixel layout.
KEPT_TAGS = {**GEO_TAGS, GDAL_METADATA: "GDAL_METADATA", GDAL_NODATA: "GDAL_NODATA",
             50844: "RPCCoefficient", 270: "ImageDescription", 269: "DocumentName", 271: "Make",
             272: "Model", 274: "Orientation", 285: "PageName", 305: "Software", 306: "DateTime",
             315: "Artist", 316: "HostComputer", 700: "XMP", 33432: "Copyright", 33723: "IPTC",
             34675: "InterColorProfile"}
# Tags the writer derives from the array and the layout arguments (never reported as dropped).
_LAYOUT_TAGS = {254, 255, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 282, 283, 284, 296, 317,
                322, 323, 324, 325, 338, 339}
_WRITABLE_COMPRESSION = {1, 8, 32946, 34925}  # none, adobe deflate, deflate, LZMA (no imagecodecs)
_SUPPORTED_DTYPES = ("uint8", "uint16", "int8", "int16", "float16", "float32", "float64")
_PHOTOMETRIC = {tifffile.PHOTOMETRIC.MINISBLACK: "minisblack",
                tifffile.PHOTOMETRIC.MINISWHITE: "miniswhite", tifffile.PHOTOMETRIC.RGB: "rgb"}
_ROWS_PER_CHUNK = 512  # scaling back to the stored dtype goes in row blocks (bounded float64 copies)


class RasterError(ValueError):
    """A TIFF raster that cannot be read or written (the message names the file)."""


class RasterWarning(UserWarning):
    """Metadata of a raster that cannot be carried over to the written file (named in the message)."""


@dataclasses.dataclass(frozen=True)
class RawTag:
    """One TIFF tag as stored: `data` is its value's bytes in the file's byte order."""

    code: int
    name: str
    datatype: int
    count: int
    data: bytes

    def value(self, byteorder: str = "<"):
        """The decoded value: a str for ASCII, else a numpy array."""
        if self.datatype == 2:
            return self.data.split(b"\x00", 1)[0].decode("ascii", "replace")
        fmt = tifffile.TIFF.DATA_FORMATS[self.datatype]
        count, char = (2, fmt[1]) if fmt[0] == "2" else (1, fmt[-1])
        return np.frombuffer(self.data, np.dtype(byteorder + char)).reshape(-1, count).squeeze(-1)


@dataclasses.dataclass(frozen=True)
class PageInfo:
    """How the first page of a TIFF stores its samples (what `read_tiff_array` found)."""

    photometric: int
    extrasamples: tuple[int, ...]
    planar: bool
    compression: int
    predictor: int
    tile: tuple[int, int] | None
    colormap: np.ndarray | None
    byteorder: str
    bigtiff: bool
    pages: int

    @property
    def alpha(self) -> bool:
        """The last sample is declared associated or unassociated alpha (ExtraSamples 1 or 2)."""
        return bool(self.extrasamples) and int(self.extrasamples[-1]) in (1, 2)


@dataclasses.dataclass(frozen=True, eq=False)
class Raster:
    """A TIFF raster scaled to [0, 1]: `stored = pixels * scale + offset` per band (see module doc)."""

    pixels: np.ndarray            # float32 [H, W, bands] in [0, 1] (invalid samples read as 0)
    dtype: np.dtype               # stored sample type
    offset: np.ndarray            # float64 [bands]
    scale: np.ndarray             # float64 [bands], > 0
    scaling: str                  # "dtype", "minmax" or "identity"
    photometric: str = "minisblack"
    extrasamples: tuple[int, ...] = ()
    planar: bool = False
    compression: int = 1
    predictor: int = 1
    tile: tuple[int, int] | None = None
    resolution: tuple | None = None   # ((num, den), (num, den)) as stored, or None
    resolutionunit: int | None = None
    tags: tuple[RawTag, ...] = ()
    byteorder: str = "<"
    bigtiff: bool = False
    invalid: np.ndarray | None = None  # bool [H, W, bands]: no-data samples, or None
    source: str = ""
    stored: np.ndarray | None = None  # lazy rasters: the samples as stored; `pixels` are windows

    @property
    def bands(self) -> int:
        return self.pixels.shape[-1]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.pixels.shape

    @property
    def alpha(self) -> bool:
        """The last band is declared alpha (ExtraSamples 1 or 2)."""
        return bool(self.extrasamples) and int(self.extrasamples[-1]) in (1, 2)

    def tag(self, code: int) -> RawTag | None:
        return next((t for t in self.tags if t.code == code), None)

    @property
    def nodata(self) -> float | None:
        """The GDAL_NODATA value, or None."""
        tag = self.tag(GDAL_NODATA)
        return None if tag is None else _parse_nodata(tag.value(self.byteorder), self.source)

    @property
    def georeferenced(self) -> bool:
        return any(t.code in GEO_TAGS for t in self.tags)

    def with_pixels(self, pixels) -> "Raster":
        """The same raster metadata around new pixels `[H, W, bands']` (e.g. a deblurred image).

        A different band count (gray <-> RGB, alpha dropped) needs one scaling shared by the bands;
        the photometric interpretation and the no-data mask follow the new band count.
        """
        pixels = np.asarray(pixels, np.float32)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if pixels.shape[:2] != self.pixels.shape[:2]:
            raise ValueError(f"pixels {pixels.shape} do not match the raster {self.pixels.shape}")
        bands = pixels.shape[-1]
        if bands == self.bands:
            return dataclasses.replace(self, pixels=pixels)
        if np.ptp(self.offset) or np.ptp(self.scale):
            raise ValueError("changing the band count needs one scaling for every band")
        invalid = None if self.invalid is None else np.repeat(
            self.invalid.any(axis=-1, keepdims=True), bands, axis=-1)
        return dataclasses.replace(
            self, pixels=pixels, offset=np.full(bands, self.offset[0]),
            scale=np.full(bands, self.scale[0]), extrasamples=(), invalid=invalid,
            photometric="rgb" if bands == 3 else "minisblack")


# ----------------------------------------------------------------------------------------------------
# Reading.


def _raw_tag(fh, tag) -> RawTag:
    fmt = tifffile.TIFF.DATA_FORMATS[tag.dtype]
    itemsize = np.dtype(fmt[-1] if fmt[-1] != "s" else "S1").itemsize * (2 if fmt[0] == "2" else 1)
    fh.seek(tag.valueoffset)
    return RawTag(int(tag.code), str(tag.name), int(tag.dtype), int(tag.count),
                  fh.read(int(tag.count) * itemsize))


def _page_array(page) -> np.ndarray:
    """The first page's samples as `[H, W, samples]` (planar storage moved last)."""
    arr = page.asarray()
    planar = page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
    if arr.ndim == 3 and planar and page.samplesperpixel > 1:
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise RasterError(f"unsupported TIFF page shape {page.shape} (axes {page.axes})")
    return arr


def _page_info(tif, page) -> PageInfo:
    tile = (int(page.tilelength), int(page.tilewidth)) if page.is_tiled else None
    return PageInfo(photometric=int(page.photometric),
                    extrasamples=tuple(int(e) for e in page.extrasamples),
                    planar=page.planarconfig == tifffile.PLANARCONFIG.SEPARATE,
                    compression=int(page.compression), predictor=int(page.predictor), tile=tile,
                    colormap=page.colormap if page.photometric == tifffile.PHOTOMETRIC.PALETTE
                    else None,
                    byteorder=tif.byteorder, bigtiff=bool(tif.is_bigtiff), pages=len(tif.pages))


def read_tiff_array(path) -> tuple[np.ndarray, PageInfo]:
    """The first page's samples as stored (`[H, W, samples]`, native dtype) and how they are stored.

    No scaling, no conversion and no warnings: the building block of `read_raster` and of
    `unroll.data.load_image`.
    """
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        return _page_array(page), _page_info(tif, page)


def _parse_nodata(text: str, source: str) -> float:
    try:
        return float(text.strip().strip("\x00"))
    except ValueError:
        raise RasterError(f"{source}: GDAL_NODATA {text!r} is not a number") from None


def _invalid_mask(arr: np.ndarray, nodata: float | None) -> np.ndarray | None:
    mask = np.zeros(arr.shape, bool)
    if arr.dtype.kind == "f":
        mask |= ~np.isfinite(arr)
    if nodata is not None and not np.isnan(nodata):
        mask |= arr == nodata
    return mask if mask.any() else None


def _valid_range(arr, invalid, per_band: bool, source: str):
    """(low, high) per band over the valid samples; one shared range unless `per_band`."""
    bands = arr.shape[-1]
    lo, hi = np.empty(bands), np.empty(bands)
    for b in range(bands):
        values = arr[..., b] if invalid is None else arr[..., b][~invalid[..., b]]
        if values.size == 0:
            lo[b], hi[b] = np.nan, np.nan
        else:
            lo[b], hi[b] = float(values.min()), float(values.max())
    if np.all(np.isnan(lo)):
        raise RasterError(f"{source}: every pixel is no-data")
    if not per_band:
        lo[:], hi[:] = np.nanmin(lo), np.nanmax(hi)
    return np.nan_to_num(lo), np.nan_to_num(hi)  # an all-no-data band: any range will do


def _scaling(arr, invalid, scaling: str, per_band: bool, source: str):
    """(offset, scale, method) with stored = pixels * scale + offset."""
    bands, kind = arr.shape[-1], arr.dtype.kind
    if scaling == "auto":
        scaling = "minmax" if kind == "f" else "dtype"
        if kind == "f":
            lo, hi = _valid_range(arr, invalid, False, source)
            if lo[0] >= 0 and hi[0] <= 1:  # already in [0, 1]: keep the values as they are
                return np.zeros(bands), np.ones(bands), "identity"
    if scaling == "dtype":
        if kind == "f":
            raise RasterError(f"{source}: float data has no dtype range; use scaling='minmax'")
        info = np.iinfo(arr.dtype)
        return np.full(bands, float(info.min)), np.full(bands, float(info.max) - info.min), scaling
    if scaling != "minmax":
        raise ValueError(f"scaling must be 'auto', 'dtype' or 'minmax', got {scaling!r}")
    lo, hi = _valid_range(arr, invalid, per_band, source)
    return lo, np.where(hi > lo, hi - lo, 1.0), scaling


def _to_pixels(arr, offset, scale, invalid) -> np.ndarray:
    """(stored - offset) / scale in float64 row blocks, as float32 in [0, 1]; invalid samples 0."""
    pixels = np.empty(arr.shape, np.float32)
    for top in range(0, arr.shape[0], _ROWS_PER_CHUNK):
        rows = slice(top, top + _ROWS_PER_CHUNK)
        block = (arr[rows].astype(np.float64) - offset) / scale
        if invalid is not None:
            block[invalid[rows]] = 0.0
        pixels[rows] = np.clip(block, 0.0, 1.0)  # only rounding can leave [0, 1]
    return pixels


def _kept_and_dropped(tif, page) -> tuple[tuple[RawTag, ...], list[str]]:
    kept, dropped = [], []
    for tag in page.tags.values():
        if tag.code in KEPT_TAGS:
            kept.append(_raw_tag(tif.filehandle, tag))
        elif tag.code not in _LAYOUT_TAGS:
            dropped.append(f"{tag.name} ({tag.code})")
    if page.photometric == tifffile.PHOTOMETRIC.PALETTE:
        dropped.append("ColorMap (320): palette indices are expanded to RGB")
    if len(tif.pages) > 1:
        dropped.append(f"pages 2-{len(tif.pages)} (overviews, masks or further images)")
    if page.compression not in _WRITABLE_COMPRESSION:
        dropped.append(f"Compression {page.compression.name} (written as deflate)")
    return tuple(kept), dropped


def _resolution(page):
    tags = page.tags
    if 282 not in tags or 283 not in tags:
        return None, None
    unit = int(tags[296].value) if 296 in tags else None
    return (tuple(tags[282].value), tuple(tags[283].value)), unit


class TiffWindows:
    """The first page's stored samples `[H, W, samples]` of a chunky (band-interleaved) TIFF, read a
    window at a time: uncompressed contiguous data by positioned reads of the window's rows, strips
    and tiles by decoding only the segments a window touches (recent ones cached). The whole scene is
    never in memory."""

    def __init__(self, path):
        self.path = Path(path)
        self._tif = tifffile.TiffFile(self.path)
        page = self._page = self._tif.pages.first
        if page.planarconfig == tifffile.PLANARCONFIG.SEPARATE and page.samplesperpixel > 1:
            raise RasterError(f"{path}: planar (band-separate) TIFFs are read whole")
        self.shape = (int(page.imagelength), int(page.imagewidth), int(page.samplesperpixel))
        self.dtype, self.ndim = np.dtype(page.dtype), 3
        self._contiguous = bool(page.is_contiguous) and page.compression == 1 and page.bitspersample % 8 == 0
        self._file_dtype = self.dtype.newbyteorder(self._tif.byteorder)
        if page.is_tiled:
            self._segment_shape = (int(page.tilelength), int(page.tilewidth))
        else:
            self._segment_shape = (min(int(page.rowsperstrip), self.shape[0]), self.shape[1])
        self._cache: dict[int, np.ndarray] = {}

    def close(self):
        self._tif.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key, slice(None))
        (r0, r1, _), (c0, c1, _) = (k.indices(n) for k, n in zip(key[:2], self.shape[:2]))
        out = np.empty((max(r1 - r0, 0), max(c1 - c0, 0), self.shape[2]), self.dtype)
        if out.size == 0:
            return out
        if self._contiguous:
            fh, offset = self._tif.filehandle, self._page.dataoffsets[0]
            row_bytes, item = self.shape[1] * self.shape[2] * self.dtype.itemsize, self.shape[2] * self.dtype.itemsize
            for i, r in enumerate(range(r0, r1)):
                fh.seek(offset + r * row_bytes + c0 * item)
                row = np.frombuffer(fh.read((c1 - c0) * item), self._file_dtype)
                out[i] = row.reshape(c1 - c0, self.shape[2])
            return out
        sh, sw = self._segment_shape
        across = -(-self.shape[1] // sw)
        for sr in range(r0 // sh, (r1 - 1) // sh + 1):
            for sc in range(c0 // sw, (c1 - 1) // sw + 1):
                seg = self._segment(sr * across + sc)
                top, left = sr * sh, sc * sw
                a0, a1 = max(r0, top), min(r1, top + seg.shape[0])
                b0, b1 = max(c0, left), min(c1, left + seg.shape[1])
                out[a0 - r0:a1 - r0, b0 - c0:b1 - c0] = seg[a0 - top:a1 - top, b0 - left:b1 - left]
        return out

    def _segment(self, index: int) -> np.ndarray:
        if index not in self._cache:
            page, fh = self._page, self._tif.filehandle
            fh.seek(page.dataoffsets[index])
            data, _, shape = page.decode(fh.read(page.databytecounts[index]), index)
            if len(self._cache) >= 4 * (-(-self.shape[1] // self._segment_shape[1])):  # ~ 4 rows
                self._cache.pop(next(iter(self._cache)))
            self._cache[index] = np.asarray(data).reshape(shape[-3:])
        return self._cache[index]


class ScaledWindows:
    """Float32 [0, 1] windows `[h, w, bands]` of stored samples (`stored = pixels * scale + offset`;
    no-data samples read 0), converted on access: a lazy raster's `pixels`."""

    def __init__(self, stored: np.ndarray, offset, scale, nodata: float | None):
        self.stored, self.offset, self.scale, self.nodata = stored, offset, scale, nodata
        self.shape, self.dtype, self.ndim = stored.shape, np.dtype(np.float32), stored.ndim

    def __getitem__(self, key):
        block = self.stored[key]
        return _to_pixels(block, self.offset, self.scale, _invalid_mask(block, self.nodata))


def read_raster(path, scaling: str = "auto", per_band: bool = False, lazy: bool = False) -> Raster:
    """Read the first page of a TIFF / GeoTIFF as a `Raster` (see the module docstring).

    `lazy=True` keeps the samples as stored (`Raster.stored`) and gives `pixels` as `ScaledWindows`
    converted a window at a time: no float copy of the scene (for tiled deblurring of large scenes).
    Warns (`RasterWarning`) naming every tag or page that `write_raster` cannot reproduce.
    """
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            windowed = (lazy and page.dtype is not None and np.dtype(page.dtype).kind in "ui"
                        and page.colormap is None and page.photometric in (
                            tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB)
                        and not (page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
                                 and page.samplesperpixel > 1))
            arr = TiffWindows(path) if windowed else _page_array(page)
            info = _page_info(tif, page)
            kept, dropped = _kept_and_dropped(tif, page)
            resolution, unit = _resolution(page)
    except RasterError as exc:
        raise RasterError(f"{path}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - tifffile / codec failures come in many types
        hint = " (pip install imagecodecs)" if "imagecodecs" in str(exc) else ""
        raise RasterError(f"cannot read TIFF {path}: {type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}{hint}"
                          ) from exc
    photometric = info.photometric
    if info.colormap is not None:  # palette: index -> uint16 RGB, as unroll.data does
        arr, photometric = np.moveaxis(info.colormap[:, arr[..., 0]], 0, -1), 2
    if photometric not in _PHOTOMETRIC:
        raise RasterError(f"{path}: photometric interpretation "
                          f"{tifffile.PHOTOMETRIC(photometric).name} is not supported "
                          "(gray, RGB, palette or multi-band MINISBLACK only)")
    if arr.dtype.name not in _SUPPORTED_DTYPES:
        raise RasterError(f"{path}: sample type {arr.dtype} is not supported "
                          f"({', '.join(_SUPPORTED_DTYPES)})")
    if dropped:
        warnings.warn(f"{path}: cannot keep {', '.join(dropped)}; written files will lack them",
                      RasterWarning, stacklevel=2)
    source = str(path)
    nodata_tag = next((t for t in kept if t.code == GDAL_NODATA), None)
    nodata = None if nodata_tag is None else _parse_nodata(nodata_tag.value(info.byteorder), source)
    needs_range = scaling == "minmax" or (scaling == "auto" and arr.dtype.kind == "f")
    invalid = _invalid_mask(arr, nodata) if needs_range or not lazy else None
    offset, scale, method = _scaling(arr, invalid, scaling, per_band, source)
    if lazy:
        pixels, invalid = ScaledWindows(arr, offset, scale, nodata), None
    else:
        pixels = _to_pixels(arr, offset, scale, invalid)
    return Raster(pixels=pixels, stored=arr if lazy else None, dtype=arr.dtype, offset=offset,
                  scale=scale, scaling=method,
                  photometric=_PHOTOMETRIC[photometric],
                  extrasamples=info.extrasamples if info.colormap is None else (),
                  planar=info.planar, compression=info.compression, predictor=info.predictor,
                  tile=info.tile, resolution=resolution, resolutionunit=unit, tags=kept,
                  byteorder=info.byteorder, bigtiff=info.bigtiff, invalid=invalid, source=source)


# ----------------------------------------------------------------------------------------------------
# Writing.


def _stored_block(raster: Raster, pixels: np.ndarray, top: int) -> np.ndarray:
    """Rows `top:top + len(pixels)` of `pixels` in [0, 1] mapped back to the stored dtype and range;
    no-data samples get the no-data value."""
    dtype = np.dtype(raster.dtype)
    rows = slice(top, top + pixels.shape[0])
    block = np.clip(np.asarray(pixels, np.float64), 0.0, 1.0) * raster.scale + raster.offset
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        block = np.clip(np.rint(block), info.min, info.max)
    invalid = (raster.invalid[rows] if raster.invalid is not None else
               _invalid_mask(raster.stored[rows], raster.nodata) if raster.stored is not None else None)
    if invalid is not None:
        block[invalid] = raster.nodata if raster.nodata is not None else np.nan
    return block.astype(dtype)


def to_stored(raster: Raster, pixels=None) -> np.ndarray:
    """`pixels` (default: the raster's) clipped to [0, 1] and mapped back to the stored dtype and
    range; no-data samples get the no-data value."""
    pixels = raster.pixels if pixels is None else pixels
    if tuple(pixels.shape) != tuple(raster.pixels.shape):
        raise ValueError(f"pixels {pixels.shape} do not match the raster {raster.pixels.shape}")
    out = np.empty(pixels.shape, np.dtype(raster.dtype))
    for top in range(0, pixels.shape[0], _ROWS_PER_CHUNK):
        out[top:top + _ROWS_PER_CHUNK] = _stored_block(
            raster, np.asarray(pixels[top:top + _ROWS_PER_CHUNK], np.float32), top)
    return out


def _extratags(raster: Raster) -> list[tuple]:
    # Raw bytes in the file's byte order: the writer uses the same order, so they are copied as is.
    return [(t.code, t.datatype, t.count if t.datatype == 2 else None, t.data, False)
            for t in raster.tags]


def _write_layout(raster: Raster) -> dict:
    kwargs = {"photometric": raster.photometric, "planarconfig": "separate" if raster.planar
              else "contig"}
    if raster.extrasamples and raster.bands > (3 if raster.photometric == "rgb" else 1):
        kwargs["extrasamples"] = raster.extrasamples
    if raster.compression in _WRITABLE_COMPRESSION:
        kwargs["compression"] = raster.compression if raster.compression != 1 else None
    else:
        kwargs["compression"] = 8  # decided (and warned about) when the file was read
    if kwargs["compression"] and raster.predictor != 1:
        kwargs["predictor"] = raster.predictor
    if raster.tile and all(t % 16 == 0 for t in raster.tile):
        kwargs["tile"] = raster.tile
    if raster.resolution is not None:
        kwargs["resolution"] = raster.resolution
        kwargs["resolutionunit"] = raster.resolutionunit
    return kwargs


def write_raster(path, raster: Raster, pixels=None, software: str | None = None) -> Path:
    """Write `pixels` (default: the raster's) as a TIFF with the raster's dtype, range, layout and
    kept tags (raw, byte-identical; with `software`, the Software tag says that instead). Parent
    folders are created; the file appears complete or not at all (`unroll.atomic.writing`)."""
    path = Path(path)
    data = to_stored(raster, pixels)
    if raster.planar and raster.bands > 1:
        data = np.moveaxis(data, -1, 0)
    if raster.bands == 1:
        data = data[..., 0] if not raster.planar else data[0]
    bigtiff = raster.bigtiff or data.nbytes > 2 ** 32 - 2 ** 25
    layout = _write_layout(raster)
    tags = [t for t in _extratags(raster) if software is None or t[0] != 305]
    with atomic.writing(path) as tmp:
        write = lambda **kw: tifffile.imwrite(  # noqa: E731
            tmp, data, bigtiff=bigtiff, byteorder=raster.byteorder, metadata=None,
            software=software or False, extratags=tags, **kw)
        try:
            write(**layout)
        except (KeyError, ValueError) as exc:  # a predictor tifffile cannot encode without imagecodecs
            if "predictor" not in layout:
                raise
            warnings.warn(f"{path}: written without the predictor {layout.pop('predictor')} "
                          f"({type(exc).__name__}: {exc})", RasterWarning, stacklevel=2)
            write(**layout)
    return path


def write_raster_bands(path, raster: Raster, bands, software: str | None = None,
                       tile: tuple[int, int] = (256, 256)) -> Path:
    """Write new pixels of `raster` arriving as row bands `(top, float32 [h, W, bands])`, top to
    bottom (`unroll.inference.tiling.tiled_bands`), with the raster's dtype, range, band layout and
    kept tags, as a tiled TIFF (the raster's own tile size if it has one, else `tile`): the host holds
    one row of TIFF tiles, never the scene. Planar (band-separate) rasters need `write_raster`."""
    path = Path(path)
    height, width, nbands = raster.shape
    if raster.planar and nbands > 1:
        raise ValueError("planar (band-separate) rasters are written whole: use write_raster")
    th, tw = raster.tile if raster.tile and all(t % 16 == 0 for t in raster.tile) else tile
    dtype = np.dtype(raster.dtype)

    def tiles():
        pending, written = np.empty((0, width, nbands), dtype), 0
        for top, block in bands:
            pending = np.concatenate([pending, _stored_block(raster, block, top)])
            while len(pending) >= th or (pending.size and written + len(pending) == height):
                band, pending = pending[:th], pending[th:]
                for left in range(0, width, tw):
                    piece = band[:, left:left + tw]
                    out = np.zeros((th, tw, nbands), dtype)
                    out[:piece.shape[0], :piece.shape[1]] = piece
                    yield out if nbands > 1 else out[..., 0]
                written += len(band)

    layout = _write_layout(raster)
    layout.update(tile=(th, tw), planarconfig="contig")
    if layout.get("predictor", 1) != 2 or dtype.kind not in "ui":  # tifffile encodes 2 natively
        if layout.pop("predictor", 1) != 1:
            warnings.warn(f"{path}: written without the input's predictor", RasterWarning, stacklevel=2)
    tags = [t for t in _extratags(raster) if software is None or t[0] != 305]
    bigtiff = raster.bigtiff or height * width * nbands * dtype.itemsize > 2 ** 32 - 2 ** 25
    with atomic.writing(path) as tmp:
        tifffile.imwrite(tmp, data=tiles(), shape=(height, width, nbands) if nbands > 1 else (height, width),
                         dtype=dtype, bigtiff=bigtiff, byteorder=raster.byteorder, metadata=None,
                         software=software or False, extratags=tags, **layout)
    return path


def is_tiff(path) -> bool:
    return Path(path).suffix.lower() in (".tif", ".tiff")


__all__ = ["GEO_TAGS", "KEPT_TAGS", "PageInfo", "Raster", "RasterError", "RasterWarning", "RawTag",
           "ScaledWindows", "is_tiff", "read_raster", "read_tiff_array", "to_stored", "write_raster",
           "write_raster_bands"]
