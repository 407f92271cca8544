"""unroll.inference.tiling and unroll.inference.deblur: tile layout, blending, stitched = whole image for a local model,
per-tile and global kernels with a tiny MGSTNet, and `deblur_files` on GeoTIFFs and PNGs."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage

from unroll import data
from unroll.config import Config
from unroll.data import DataError
from unroll.inference import deblur, tiling
from unroll.inference.model import Model
from unroll.models import registry

TINY = Config(stages=2, scales=1, kernel_rcabs=1, image_rcabs=1, features=8, kernel_features=4,
              kernel_size=7, channels=3)  # tiny.flags' model


@pytest.mark.parametrize("size,tile,overlap", [(10, 32, 8), (32, 32, 8), (100, 32, 8),
                                               (101, 32, 16), (57, 16, 0), (1000, 64, 32)])
def test_tile_positions_cover_the_axis_inside_it(size, tile, overlap):
    starts = tiling.tile_positions(size, tile, overlap)
    covered = np.zeros(size, bool)
    for a in starts:
        covered[a:a + tile] = True
    assert covered.all() and starts[0] == 0
    assert all(0 <= a <= max(0, size - tile) for a in starts)
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))  # overlap >= requested
    assert starts == sorted(set(starts))
    with pytest.raises(ValueError):
        tiling.tile_positions(size, tile, tile // 2 + 1)


def test_fit_tile_keeps_the_tile_count_and_is_the_smallest_such_multiple():
    rng = np.random.default_rng(0)
    cases = [((2048, 2048), 512, 32), ((1000, 2048), 512, 32), ((300, 200), 512, 32)]
    cases += [((int(rng.integers(40, 5000)), int(rng.integers(40, 5000))), int(t), int(o))
              for t, o in zip(rng.choice([64, 128, 256, 512, 1024], 60), rng.choice([0, 8, 16, 32], 60))]
    for shape, tile, overlap in cases:
        fitted = tiling.fit_tile(shape, tile, overlap)
        assert fitted <= tile and (fitted % tiling.TILE_MULTIPLE == 0 or fitted == tile)
        assert 2 * overlap <= fitted
        counts = [len(tiling.tile_positions(n, tile, overlap)) for n in shape]
        assert [len(tiling.tile_positions(n, fitted, overlap)) for n in shape] == counts
        smaller = (fitted - 1) // tiling.TILE_MULTIPLE * tiling.TILE_MULTIPLE  # the next multiple down
        if smaller >= max(1, 2 * overlap):  # it would need another tile somewhere
            assert [len(tiling.tile_positions(n, smaller, overlap)) for n in shape] != counts, \
                (shape, tile, overlap, fitted)
    # The case: a 2048 scene in 512 tiles processes 1.20x its pixels, not 1.56x.
    assert tiling.fit_tile((2048, 2048), 512, 32) == 448
    assert 25 * 448 ** 2 / 2048 ** 2 < 1.21


def test_model_deblur_runs_fitted_tiles(model, monkeypatch):
    shapes = []
    predict = model.predict
    monkeypatch.setattr(model, "predict", lambda t, noise=None: (shapes.append(t.shape), predict(t, noise))[1])
    image = np.random.default_rng(1).random((170, 150, 3)).astype(np.float32)
    restored, kernels = model.deblur(image, tile_size=128, tile_overlap=16)
    # 128 px tiles take 2 x 2 tiles; 170 px in 2 tiles overlapping by 16 need only
    # ceil((170 + 16) / 2) = 93 px, and 150 px 83: 96, the next multiple of 32.
    assert tiling.fit_tile((170, 150), 128, 16) == 96
    assert {s[1:3] for s in shapes} == {(96, 96)}
    assert kernels.shape[:2] == (2, 2) and restored.shape == image.shape


@pytest.mark.parametrize("shape,tile,overlap", [((70, 90), 32, 16), ((33, 200), 32, 12),
                                                ((20, 45), 32, 8), ((64, 64), 16, 8)])
def test_blending_weights_sum_to_one_and_skip_tile_borders(shape, tile, overlap):
    total = np.zeros(shape)
    margin = overlap // 4
    for top, left, w in tiling.tile_weights(shape, tile, overlap):
        total[top:top + w.shape[0], left:left + w.shape[1]] += w
        if left > 0:  # a tile's side inside the image: its outer `margin` columns are unused
            assert np.all(w[:, :margin] == 0)
        if top + w.shape[0] < shape[0]:
            assert np.all(w[w.shape[0] - margin:, :] == 0)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def _local_filter(x):
    """A 5x5 mean with mirrored edges: receptive-field radius 2, at most overlap // 4 below."""
    x = np.asarray(x)
    return ndimage.uniform_filter(x, size=(1, 5, 5, 1), mode="reflect"), np.ones((1, 3, 3))


@pytest.mark.parametrize("shape", [(70, 90, 3), (20, 90, 2), (64, 64, 1)])
def test_stitched_local_model_equals_whole_image(shape):
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    whole = _local_filter(image[None])[0][0]
    result = tiling.deblur_tiled(_local_filter, image, tile=32, overlap=16, progress=False)
    np.testing.assert_allclose(result.image, whole, atol=2e-6)
    assert result.kernels.shape == (len(result.rows), len(result.cols), 3, 3)
    # Control: without the zero-weight margins (overlap 0: hard seams) the tile borders show.
    seams = tiling.deblur_tiled(_local_filter, image, tile=32, overlap=0, progress=False).image
    assert shape[1] <= 32 or np.abs(seams - whole).max() > 1e-3


@pytest.fixture(scope="module")
def model():
    """A randomly initialised tiny MGSTNet, shared so its tile functions compile once."""
    return Model(TINY, *registry.build_split(TINY))


def _periodic_halves(height=64, width=128, period=8, sigmas=(0.6, 2.5)):
    """Left half blurred with sigmas[0], right with sigmas[1], of one texture of period 8 (circular
    blur keeps it periodic): every tile starting on a multiple of 8 inside a half sees the same
    pixels, so its kernel can only depend on the half's blur."""
    rng = np.random.default_rng(1)
    cell = rng.random((period, period, 3))
    texture = np.tile(cell, (height // period, width // period, 1))
    halves = [ndimage.gaussian_filter(texture, (s, s, 0), mode="wrap") for s in sigmas]
    return np.concatenate([halves[0][:, :width // 2], halves[1][:, width // 2:]], 1).astype(np.float32)


def test_per_tile_kernels_follow_each_half_and_global_kernel_is_one(model):
    image = _periodic_halves()
    restored, kernels = model.deblur(image, tile_size=32, tile_overlap=8, global_kernel=False,
                                     progress=False)
    assert restored.shape == image.shape and kernels.shape == (3, 5, 7, 7)  # cols 0, 24, ..., 96
    np.testing.assert_allclose(kernels[:, 0], kernels[:, 1], atol=1e-6)  # both in the left half
    np.testing.assert_allclose(kernels[:, 3], kernels[:, 4], atol=1e-6)  # both in the right half
    assert np.abs(kernels[0, 0] - kernels[0, 4]).sum() > 1e-3
    np.testing.assert_allclose(kernels.sum(axis=(-1, -2)), 1.0, atol=1e-5)
    restored_g, kernel = model.deblur(image, 32, 8, global_kernel=True, progress=False)
    assert restored_g.shape == image.shape and kernel.shape == (7, 7)
    assert np.all(np.isfinite(restored_g)) and abs(kernel.sum() - 1) < 1e-5


def test_image_path_with_the_networks_own_kernels_is_the_network(model):
    g = jnp.asarray(_periodic_halves(32, 32))[None]  # the tile shape: already compiled
    image, _ = model.predict(g)
    own = model._stage_kernels(model.params, g)
    np.testing.assert_allclose(model._image_path(model.params, g, own), image, atol=1e-6)
    other = (jnp.full((1, 7, 7), 1 / 49),) * 2  # not the network's kernels: another output
    assert float(jnp.abs(model._image_path(model.params, g, other) - image).max()) > 1e-4


def _geotiff(path, arr):
    tifffile.imwrite(path, arr, photometric="rgb", metadata=None,
                     extratags=[(33550, 12, 3, (10.0, 10.0, 0.0), False),
                                (34735, 3, 4, (1, 1, 0, 0), False)])


def test_deblur_files_tiles_geotiffs_and_refuses_bad_input(tmp_path, monkeypatch, model, capsys):
    rng = np.random.default_rng(2)
    scene = (rng.random((48, 70, 3)) * 60000).astype(np.uint16)
    _geotiff(tmp_path / "scene.tif", scene)
    data.save_image(tmp_path / "photo.png", rng.random((40, 36, 3)))
    out = tmp_path / "out"
    written = deblur.deblur_files(model, [tmp_path / "scene.tif", tmp_path / "photo.png"],
                                  out, tile_size=32, tile_overlap=8)
    assert [p.name for p in written] == ["scene_deblurred.tif", "photo_deblurred.png"]
    with tifffile.TiffFile(out / "scene_deblurred.tif") as tif:
        page = tif.pages.first
        assert page.dtype == np.uint16 and page.shape == (48, 70, 3)
        assert page.tags[33550].value == (10.0, 10.0, 0.0)
        assert page.tags[34735].value == (1, 1, 0, 0)
    assert data.load_image(out / "photo_deblurred.png").shape == (40, 36, 3)
    assert (out / "scene_kernel.png").exists()
    # A rerun keeps the complete outputs of the earlier run (no --overwrite needed), with a note.
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert deblur.deblur_files(model, [tmp_path / "scene.tif"], out, tile_size=32,
                               tile_overlap=8) == [out / "scene_deblurred.tif"]
    assert "1 of 1 input(s) already have complete outputs" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    deblur.deblur_files(model, [tmp_path / "scene.tif"], out, overwrite=True,
                        tile_size=32, tile_overlap=8, global_kernel=True)

    tifffile.imwrite(tmp_path / "five.tif", np.zeros((5, 40, 40), np.uint16),
                     photometric="minisblack", planarconfig="separate")
    with pytest.raises(DataError, match="five.tif has 5 bands") as err:
        deblur.deblur_files(model, [tmp_path / "five.tif"], tmp_path / "o5")
    assert "\n" not in str(err.value) and "--channels=3" in str(err.value)

    # 8 MiB: the 300x300 host arrays (4 MiB) fit, its forward pass (30 MiB) does not: tiled at once.
    monkeypatch.setattr(deblur, "available_memory", lambda: 2 ** 23)
    big = tmp_path / "big.png"
    data.save_image(big, np.zeros((300, 300, 3)))
    written = deblur.deblur_files(model, [big], tmp_path / "o6")
    assert "deblurred in 64x64 tiles" in capsys.readouterr().err
    assert data.load_image(written[0]).shape == (300, 300, 3)
    # 4 MiB: not even the host arrays fit.
    monkeypatch.setattr(deblur, "available_memory", lambda: 2 ** 22)
    with pytest.raises(DataError, match="even when tiled") as err:
        deblur.deblur_files(model, [big], tmp_path / "o7")
    assert "big.png" in str(err.value) and not (tmp_path / "o7").exists()


def test_deblurring_never_replaces_or_rereads_a_users_files(tmp_path, model, capsys):
    rng = np.random.default_rng(3)
    photos = tmp_path / "photos"
    data.save_image(photos / "x.png", rng.random((40, 36, 3)))
    data.save_image(photos / "x_kernel.png", rng.random((30, 30, 3)))  # the user's own picture
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    with pytest.raises(DataError, match="would replace an input"):
        deblur.deblur_files(model, [photos], photos, overwrite=True)
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before

    # A user's file where an output goes is never replaced, --overwrite or not.
    out = tmp_path / "out"
    data.save_image(out / "x_deblurred.png", rng.random((40, 36, 3)))
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="x_deblurred.png exists"):
            deblur.deblur_files(model, [photos / "x.png"], out, overwrite=overwrite)

    # Outputs written into the input folder are not read back as inputs by a rerun, and a rerun
    # with --overwrite replaces them (unroll wrote them).
    alone = tmp_path / "alone"
    data.save_image(alone / "a.png", rng.random((40, 36, 3)))
    first = deblur.deblur_files(model, [alone], alone)
    capsys.readouterr()
    again = deblur.deblur_files(model, [alone], alone, overwrite=True)
    assert first == again == [alone / "a_deblurred.png"]
    assert "skipping 2 file(s)" in capsys.readouterr().err
    assert sorted(p.name for p in alone.iterdir()) == ["a.png", "a_deblurred.png", "a_kernel.png"]


def test_alpha_passes_through_and_exif_orientation_is_applied(tmp_path, model):
    from PIL import Image

    rng = np.random.default_rng(4)
    rgba = (rng.random((40, 36, 4)) * 255).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clip.png")
    [out] = deblur.deblur_files(model, [tmp_path / "clip.png"], tmp_path / "o1")
    with Image.open(out) as im:
        assert im.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(im)[..., 3], rgba[..., 3])

    rgba16 = (rng.random((40, 36, 4)) * 65535).astype(np.uint16)  # a TIFF's alpha band too
    tifffile.imwrite(tmp_path / "clip.tif", rgba16, photometric="rgb", extrasamples=[2])
    [out] = deblur.deblur_files(model, [tmp_path / "clip.tif"], tmp_path / "o3")
    back = tifffile.imread(out)
    assert back.shape == (40, 36, 4) and back.dtype == np.uint16
    np.testing.assert_array_equal(back[..., 3], rgba16[..., 3])

    # Stored 40 wide x 24 high, EXIF orientation 6 (turn 90 degrees clockwise to view): 24 x 40.
    stored = (rng.random((24, 40, 3)) * 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    assert data.image_size(tmp_path / "turned.jpg") == (40, 24)
    upright = data.load_image(tmp_path / "turned.jpg")
    with Image.open(tmp_path / "turned.jpg") as im:
        raw = np.asarray(im, np.float32) / 255  # as stored, orientation ignored
    np.testing.assert_allclose(upright, np.rot90(raw, k=-1), atol=1e-6)
    [out] = deblur.deblur_files(model, [tmp_path / "turned.jpg"], tmp_path / "o2")
    assert data.load_image(out).shape == (40, 24, 3)


def test_memory_estimate_grows_with_pixels_and_features():
    small, wide = deblur.forward_bytes(TINY, 100, 100), deblur.forward_bytes(
        dataclasses.replace(TINY, features=64), 100, 100)
    assert deblur.forward_bytes(TINY, 200, 200) == 4 * small and wide > 4 * small
    assert deblur.suggest_tile(TINY, 2 ** 34) == 2048 and deblur.suggest_tile(TINY, 2 ** 23) == 64


def test_streamed_tiled_files_equal_in_memory_tiling(tmp_path, model):
    """Tiled deblurring of files reads stored samples a window at a time and writes bands; the result
    equals tiling the decoded float image in memory, to the last stored bit."""
    from unroll.data import raster

    rng = np.random.default_rng(5)
    _geotiff(tmp_path / "scene.tif", (rng.random((70, 90, 3)) * 60000).astype(np.uint16))
    data.save_image(tmp_path / "photo.png", rng.random((70, 90, 3)))
    tif_out, png_out = deblur.deblur_files(model, [tmp_path / "scene.tif", tmp_path / "photo.png"],
                                           tmp_path / "out", tile_size=32, tile_overlap=8)
    source = raster.read_raster(tmp_path / "scene.tif")
    expected, _ = model.deblur(source.pixels, 32, 8)
    np.testing.assert_array_equal(tifffile.imread(tif_out), raster.to_stored(source, expected))
    expected, _ = model.deblur(data.load_image(tmp_path / "photo.png"), 32, 8)
    with Image.open(png_out) as im:
        np.testing.assert_array_equal(np.asarray(im), np.rint(np.clip(expected, 0, 1) * 255).astype(np.uint8))
    with tifffile.TiffFile(tif_out) as tif:
        assert tif.pages.first.software == "unroll" and tif.pages.first.tags[33550].value == (10.0, 10.0, 0.0)


def test_write_raster_bands_keeps_nodata_and_layout(tmp_path):
    from unroll.data import raster

    stored = (np.arange(40 * 50 * 2) % 1000).astype(np.int16).reshape(40, 50, 2)
    stored[3, 4] = -9999
    tifffile.imwrite(tmp_path / "in.tif", stored, photometric="minisblack", planarconfig="contig",
                     extratags=[(42113, 2, None, "-9999", False)])
    lazy = raster.read_raster(tmp_path / "in.tif", lazy=True)
    whole = raster.read_raster(tmp_path / "in.tif")
    np.testing.assert_array_equal(lazy.pixels[5:20, 7:30], whole.pixels[5:20, 7:30])
    bands = ((top, whole.pixels[top:top + 16]) for top in range(0, 40, 16))
    raster.write_raster_bands(tmp_path / "out.tif", lazy, bands, tile=(16, 32))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), stored)
