"""unroll.data.raster: GeoTIFF round trips keep the tags byte for byte and the pixels; dropped tags warn.

The tag bytes are checked with a small IFD parser written here from the TIFF 6.0 layout (header,
12-byte entries, values inline when they fit in 4 bytes), independent of tifffile.
"""

import struct
import warnings

import numpy as np
import pytest
import tifffile

from unroll.data import raster
from unroll.data.raster import RasterWarning

TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}

GEO_EXTRATAGS = [
    (33550, 12, 3, (0.5, 0.25, 0.0), False),                       # ModelPixelScale
    (33922, 12, 6, (0.0, 0.0, 0.0, 500000.0, 4649776.0, 0.0), False),  # ModelTiepoint
    (34264, 12, 16, tuple(float(i) for i in range(16)), False),      # ModelTransformation
    (34735, 3, 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), False),
    (34736, 12, 2, (6378137.0, 298.257223563), False),               # GeoDoubleParams
    (34737, 2, 0, "WGS 84 / UTM zone 33N|WGS 84|", False),          # GeoAsciiParams
    (42112, 2, 0, '<GDALMetadata><Item name="SENSOR">test</Item></GDALMetadata>', False),
]
NODATA = {"uint8": 255, "uint16": 0, "int16": -9999, "float32": -9999}


def raw_tags(path) -> dict[int, tuple[int, int, bytes]]:
    """code -> (type, count, value bytes) of the first IFD of a classic TIFF, parsed by hand."""
    blob = open(path, "rb").read()
    order = {b"II": "<", b"MM": ">"}[blob[:2]]
    assert struct.unpack(order + "H", blob[2:4])[0] == 42, "classic TIFF expected"
    ifd = struct.unpack(order + "I", blob[4:8])[0]
    (count,) = struct.unpack(order + "H", blob[ifd:ifd + 2])
    tags = {}
    for i in range(count):
        entry = blob[ifd + 2 + 12 * i: ifd + 14 + 12 * i]
        code, kind, n = struct.unpack(order + "HHI", entry[:8])
        size = TYPE_SIZES[kind] * n
        offset = ifd + 2 + 12 * i + 8 if size <= 4 else struct.unpack(order + "I", entry[8:])[0]
        tags[code] = (kind, n, blob[offset:offset + size])
    return tags


def _sample(dtype, shape, rng):
    if dtype == "float32":
        return rng.normal(300.0, 80.0, shape).astype(np.float32)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)


def _write_geotiff(path, arr, planar=False, nodata=None, byteorder="<", **kw):
    bands = arr.shape[-1]
    data = arr[..., 0] if bands == 1 else (np.moveaxis(arr, -1, 0) if planar else arr)
    tags = list(GEO_EXTRATAGS)
    if nodata is not None:
        tags.append((42113, 2, 0, str(nodata), False))
    tifffile.imwrite(path, data, photometric="rgb" if bands == 3 else "minisblack",
                     planarconfig=("separate" if planar else "contig") if bands > 1 else None,
                     extratags=tags, metadata=None, description="a test scene",
                     resolution=((72, 1), (300, 7)), resolutionunit="inch", byteorder=byteorder,
                     **kw)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
@pytest.mark.parametrize("bands,planar", [(1, False), (3, False), (5, True), (5, False)])
def test_geotiff_round_trip_keeps_tags_and_pixels(tmp_path, dtype, bands, planar):
    rng = np.random.default_rng(bands)
    arr = _sample(dtype, (19, 23, bands), rng)
    arr[2, 3, 0] = arr[4, 5, -1] = NODATA[dtype]
    _write_geotiff(tmp_path / "in.tif", arr, planar, nodata=NODATA[dtype])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RasterWarning)  # every tag here can be kept
        scene = raster.read_raster(tmp_path / "in.tif")
    assert scene.pixels.dtype == np.float32 and scene.pixels.shape == arr.shape
    assert 0.0 <= scene.pixels.min() and scene.pixels.max() <= 1.0
    assert scene.georeferenced and scene.nodata == NODATA[dtype]
    raster.write_raster(tmp_path / "out.tif", scene)

    before, after = raw_tags(tmp_path / "in.tif"), raw_tags(tmp_path / "out.tif")
    for code in [t[0] for t in GEO_EXTRATAGS] + [42113, 270, 282, 283, 296]:
        assert after[code] == before[code], code  # type, count and bytes
    out = tifffile.imread(tmp_path / "out.tif")
    out = out[..., None] if bands == 1 else (np.moveaxis(out, 0, -1) if planar else out)
    assert out.dtype == arr.dtype
    if dtype == "float32":
        valid = arr != NODATA[dtype]
        np.testing.assert_array_equal(out[~valid], arr[~valid])
        assert out[valid].min() == arr[valid].min() and out[valid].max() == arr[valid].max()
        np.testing.assert_allclose(out, arr, rtol=0, atol=1e-6 * np.ptp(arr[valid]))
    else:
        np.testing.assert_array_equal(out, arr)


def test_integer_scalings_are_exact_and_documented(tmp_path):
    twelve_bit = np.random.default_rng(0).integers(100, 4096, (16, 16, 2)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", twelve_bit, photometric="minisblack", planarconfig="contig")
    dtype_scaled = raster.read_raster(tmp_path / "a.tif")
    np.testing.assert_allclose(dtype_scaled.pixels, twelve_bit / 65535.0, atol=1e-7)
    stretched = raster.read_raster(tmp_path / "a.tif", scaling="minmax")
    assert stretched.pixels.min() == 0.0 and stretched.pixels.max() == 1.0
    per_band = raster.read_raster(tmp_path / "a.tif", scaling="minmax", per_band=True)
    for b in range(2):
        assert per_band.pixels[..., b].min() == 0.0 and per_band.pixels[..., b].max() == 1.0
    for scene in (stretched, per_band):
        np.testing.assert_array_equal(raster.to_stored(scene), twelve_bit)
    signed = np.array([[-32768, -1, 0, 32767]], np.int16)
    tifffile.imwrite(tmp_path / "s.tif", signed)
    np.testing.assert_allclose(raster.read_raster(tmp_path / "s.tif").pixels[0, :, 0],
                               (signed[0] + 32768.0) / 65535.0, atol=1e-7)


def test_writing_new_pixels_keeps_the_range_and_the_nodata_mask(tmp_path):
    arr = np.linspace(-5.0, 20.0, 60, dtype=np.float32).reshape(6, 10, 1)
    arr[0, 0, 0] = np.nan
    tifffile.imwrite(tmp_path / "f.tif", arr[..., 0], extratags=GEO_EXTRATAGS[:2])
    scene = raster.read_raster(tmp_path / "f.tif")
    wild = np.full(arr.shape, 2.0, np.float32)  # a restored image overshooting [0, 1]
    wild[0, 1] = -1.0
    raster.write_raster(tmp_path / "g.tif", scene, wild)
    out = tifffile.imread(tmp_path / "g.tif")
    assert np.isnan(out[0, 0])  # no GDAL_NODATA: NaN marks no-data
    assert out[0, 1] == np.nanmin(arr) and out[3, 3] == np.nanmax(arr) == 20.0


def test_band_count_change_and_big_endian_and_compressed_tiles(tmp_path):
    arr = np.random.default_rng(1).integers(0, 65536, (32, 48, 3)).astype(np.uint16)
    _write_geotiff(tmp_path / "be.tif", arr, byteorder=">", compression="zlib", tile=(16, 16))
    scene = raster.read_raster(tmp_path / "be.tif")
    raster.write_raster(tmp_path / "be2.tif", scene)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "be2.tif"), arr)
    with tifffile.TiffFile(tmp_path / "be2.tif") as tif:
        page = tif.pages.first
        assert tif.byteorder == ">" and page.is_tiled and page.compression == 8
        assert page.tags[33550].value == (0.5, 0.25, 0.0)
    gray = scene.with_pixels(scene.pixels.mean(axis=-1, keepdims=True))
    raster.write_raster(tmp_path / "gray.tif", gray)
    assert tifffile.imread(tmp_path / "gray.tif").shape == (32, 48)


def test_tags_that_cannot_be_kept_warn_by_name(tmp_path):
    arr = np.zeros((8, 8), np.uint8)
    tifffile.imwrite(tmp_path / "x.tif", arr, extratags=[(340, 12, 1, 0.0, False),  # SMinSampleValue
                                                        (65000, 2, 0, "private", False)])
    with pytest.warns(RasterWarning, match="SMinSampleValue") as record:
        raster.read_raster(tmp_path / "x.tif")
    assert "65000" in str(record[0].message) and "x.tif" in str(record[0].message)
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:
        tif.write(arr)
        tif.write(arr[:4, :4])  # an overview
    with pytest.warns(RasterWarning, match="pages 2-2"):
        raster.read_raster(tmp_path / "pages.tif")


def test_unsupported_rasters_fail_naming_the_file(tmp_path):
    tifffile.imwrite(tmp_path / "i32.tif", np.zeros((4, 4), np.int32))
    with pytest.raises(raster.RasterError, match="i32.tif"):
        raster.read_raster(tmp_path / "i32.tif")
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(raster.RasterError, match="bad.tif"):
        raster.read_raster(tmp_path / "bad.tif")


@pytest.mark.parametrize("layout", [dict(), dict(byteorder=">"), dict(rowsperstrip=16, compression="zlib", predictor=2),
                                    dict(tile=(32, 32), compression="zlib")])
def test_tiff_windows_read_any_window_as_stored(tmp_path, layout):
    stored = (np.random.default_rng(0).random((100, 70, 3)) * 60000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stored, photometric="rgb", **layout)
    windows = raster.TiffWindows(tmp_path / "s.tif")
    assert windows.shape == stored.shape and windows.dtype == stored.dtype
    for rows, cols in [(slice(0, 100), slice(0, 70)), (slice(13, 61), slice(5, 69)), (slice(95, 100), slice(40, 41))]:
        np.testing.assert_array_equal(windows[rows, cols], stored[rows, cols])
    lazy = raster.read_raster(tmp_path / "s.tif", lazy=True)
    assert isinstance(lazy.stored, raster.TiffWindows)
    np.testing.assert_array_equal(lazy.pixels[10:50, 3:30], raster.read_raster(tmp_path / "s.tif").pixels[10:50, 3:30])
