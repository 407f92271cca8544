"""What a newcomer passes to `Model.deblur` and the deblur CLI: integer images scaled and given back
in their dtype and range, PIL images, gray in gray out through an RGB network, non-finite input
refused, an unknown model name explained. Checked against the float path of the same network."""

import warnings

import numpy as np
import pytest
import tifffile
from PIL import Image

import unroll
from unroll.config import Config
from unroll.inference import deblur
from unroll.inference.model import Model
from unroll.models import registry
from unroll.pretrained import PretrainedError

RGB = Config(stages=1, scales=1, kernel_rcabs=0, image_rcabs=0, features=4, kernel_features=4,
             kernel_size=5, channels=3)


@pytest.fixture(scope="module")
def model():
    return Model(RGB, *registry.build_split(RGB))


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(3)
    return rng.random((24, 28, 3)).astype(np.float32)


def test_integer_images_are_scaled_and_come_back_in_their_range(model, photo):
    for dtype, top in ((np.uint8, 255), (np.uint16, 65535)):
        stored = np.rint(photo * top).astype(dtype)
        restored, kernel = model.deblur(stored)
        expected, expected_kernel = model.deblur(stored.astype(np.float32) / top)
        assert restored.dtype == dtype and restored.shape == stored.shape
        np.testing.assert_array_equal(restored, np.rint(np.clip(expected, 0, 1) * top).astype(dtype))
        np.testing.assert_allclose(kernel, expected_kernel)
    with pytest.raises(ValueError, match="int16 is not supported"):
        model.deblur(np.zeros((24, 28, 3), np.int16))


def test_gray_in_gray_out_through_the_rgb_network(model, photo):
    gray = photo[..., 0]
    restored, _ = model.deblur(gray)
    rgb, _ = model.deblur(np.repeat(gray[..., None], 3, axis=-1))
    assert restored.shape == gray.shape
    np.testing.assert_allclose(restored, rgb.mean(axis=-1), atol=1e-6)
    assert model.deblur(gray[..., None])[0].shape == gray.shape + (1,)
    with pytest.raises(ValueError, match=r"expected an image \[H, W, 3\]"):
        model.deblur(np.zeros((24, 28, 2), np.float32))


def test_pil_images_work_and_keep_their_alpha(model, photo):
    stored = np.rint(photo * 255).astype(np.uint8)
    alpha = np.arange(24 * 28, dtype=np.uint8).reshape(24, 28, 1)
    restored, _ = model.deblur(Image.fromarray(np.concatenate([stored, alpha], axis=-1), "RGBA"))
    np.testing.assert_array_equal(restored[..., :3], model.deblur(stored)[0])
    np.testing.assert_array_equal(restored[..., 3:], alpha)
    palette = Image.fromarray(stored).convert("P")
    assert model.deblur(palette)[0].shape == (24, 28, 3)


def test_non_finite_input_is_one_line(model, photo):
    for bad in (np.nan, np.inf):
        image = photo.copy()
        image[3, 4, 1] = bad
        with pytest.raises(ValueError, match="1 non-finite") as err:
            model.deblur(image)
        assert "\n" not in str(err.value)


def test_unknown_name_lists_the_shipped_models(tmp_path):
    with pytest.raises(PretrainedError) as err:
        unroll.load(str(tmp_path / "nosuch"))
    assert "is not a folder" in str(err.value) and "aerial, motion" in str(err.value)


def test_cli_keeps_a_one_band_tiff_one_band(model, photo, tmp_path):
    stored = np.rint(photo[..., 0] * 60000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "band.tif", stored)
    Image.fromarray(np.rint(photo[..., 1] * 255).astype(np.uint8)).save(tmp_path / "gray.png")
    deblur.deblur_files(model, [tmp_path / "band.tif", tmp_path / "gray.png"], tmp_path / "out")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tifffile warned about the three-band file written before
        out = tifffile.imread(tmp_path / "out" / "band_deblurred.tif")
    assert out.shape == stored.shape and out.dtype == np.uint16
    expected = model.deblur(stored.astype(np.float32) / 65535)[0]
    np.testing.assert_allclose(out / 65535, np.clip(expected, 0, 1), atol=1 / 65535)
    assert np.asarray(Image.open(tmp_path / "out" / "gray_deblurred.png")).shape == (24, 28)
