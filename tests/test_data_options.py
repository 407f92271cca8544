"""Tests of the training-data options: a noise range (`noise_max`), gray crops (`gray_prob`) and
several training folders (`--train_dir=builtin,a,b`)."""

import numpy as np
import pytest
from test_data import _png, _random_folder as random_folder

from unroll import data
from unroll.config import Config, ConfigError
from unroll.data import DataError
from unroll.data.pipeline import LUMA, _dihedral, _random_crop
from unroll.data.sources import ConcatSource

# --------------------------------------------------------------------------------------------------
# Helpers.


def _random_folder(root, n=4, size=(24, 28), seed=0):
    return random_folder(root, n=n, size=size, seed=seed)  # test_data's, with smaller images


def _constant_folder(root, values):
    """One constant 20x20 image per value (0-255), so any crop of it names its value (noise=0)."""
    for v in values:
        _png(root / f"c{v}.png", np.full((20, 20, 3), v, np.uint8))
    return root


def _train(source, **kw):
    args = dict(patch_size=16, batch_size=4, kernel_size=3, process_index=0, process_count=1)
    args.update(kw)
    return data.make_train_dataset(source, **args)


def _take(it, n):
    return [next(it) for _ in range(n)]


def _noise_stds(batches):
    """Per-element std of blurred - blur_host(sharp, kernel): the noise actually added."""
    stds = []
    for b in batches:
        for blurred, sharp, kernel in zip(b["blurred"], b["sharp"], b["kernel"]):
            stds.append(float(np.std(blurred - data.blur_host(sharp, kernel))))
    return np.array(stds)


# --------------------------------------------------------------------------------------------------
# noise_max: a noise std per image.


def test_noise_range_draws_a_std_per_image_within_the_range(tmp_path):
    root = str(_random_folder(tmp_path))
    stds = _noise_stds(_take(iter(_train(root, batch_size=8, noise=(0.01, 0.1))), 5))
    # 768 samples per element: the estimate is within a few percent of the drawn std.
    assert stds.min() > 0.01 * 0.9 and stds.max() < 0.1 * 1.1
    assert stds.max() > 2.5 * stds.min()  # drawn per image, not once
    fixed = _noise_stds(_take(iter(_train(root, batch_size=8, noise=0.05)), 2))
    np.testing.assert_allclose(fixed, 0.05, rtol=0.1)


def test_noise_range_with_equal_ends_is_the_fixed_noise(tmp_path):
    root = str(_random_folder(tmp_path))
    a = _take(iter(_train(root, noise=(0.03, 0.03), seed=2)), 2)
    b = _take(iter(_train(root, noise=0.03, seed=2)), 2)
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_config_noise_max():
    Config(steps=1, noise=0.01, noise_max=0.05).validate()
    Config(steps=1, noise=0.01, noise_max=0.0).validate()  # 0: fixed noise
    with pytest.raises(ConfigError, match="--noise_max"):
        Config(steps=1, noise=0.05, noise_max=0.01).validate()
    with pytest.raises(ConfigError, match="--noise_max"):
        Config(steps=1, noise_max=-0.1).validate()
    assert Config.from_dict({"noise": 0.01}).noise_max == 0.0  # old config.json files still load


# --------------------------------------------------------------------------------------------------
# noise_power: how the per-image std is drawn within the range.


def _drawn_stds(power, n=600, seed=0):
    """The std Degradation adds to n black 48x48 images (blur of zero is zero: the output is noise)."""
    deg = data.Degradation(3, (1.0, 1.0), (0.0, 0.04), noise_power=power)
    rng = np.random.default_rng(seed)
    zero = np.zeros((48, 48, 1), np.float32)
    return np.array([float(np.std(deg(zero, rng)[0])) for _ in range(n)])


@pytest.mark.parametrize("power", [1.0, 2.0, 3.0])
def test_noise_power_draws_std_with_the_stated_distribution(power):
    stds = _drawn_stds(power)
    # P(std <= low + (high - low) t) = t ** (1 / power); compare the empirical CDF at a few points
    # (2304 samples per image put each std within about 2 % of the drawn one).
    for t in (0.1, 0.25, 0.5, 0.75):
        expected = t ** (1 / power)
        assert abs(np.mean(stds <= 0.04 * t) - expected) < 0.06, (t, expected)
    assert stds.min() >= 0 and stds.max() <= 0.04 * 1.05


def test_noise_power_one_is_the_uniform_draw_of_before():
    a = data.Degradation(5, (1.0, 3.0), (0.01, 0.05), noise_power=1.0)
    b = data.Degradation(5, (1.0, 3.0), (0.01, 0.05))
    img = np.random.default_rng(3).random((24, 24, 3), dtype=np.float32)
    for s in range(3):
        np.testing.assert_array_equal(a(img, np.random.default_rng(s))[0], b(img, np.random.default_rng(s))[0])
    # ...and a power other than 1 changes the draw (same rng, same kernel).
    c = data.Degradation(5, (1.0, 3.0), (0.01, 0.05), noise_power=2.0)
    assert not np.array_equal(a(img, np.random.default_rng(0))[0], c(img, np.random.default_rng(0))[0])


def test_noise_power_reaches_the_training_pipeline(tmp_path):
    root = str(_random_folder(tmp_path, size=(40, 40)))
    low = _noise_stds(_take(iter(_train(root, patch_size=32, batch_size=8, noise=(0.0, 0.1),
                                        noise_power=4.0)), 6))
    flat = _noise_stds(_take(iter(_train(root, patch_size=32, batch_size=8, noise=(0.0, 0.1))), 6))
    assert np.median(low) < 0.5 * np.median(flat)  # power 4: median std 0.1 * 0.5**4 ~ 0.006


def test_config_noise_power():
    Config(steps=1, noise_max=0.02, noise_power=2.0).validate()
    for bad in (0.0, -1.0):
        with pytest.raises(ConfigError, match="--noise_power"):
            Config(steps=1, noise_max=0.02, noise_power=bad).validate()
    with pytest.raises(ValueError, match="noise_power"):
        data.Degradation(3, (1.0, 1.0), (0.0, 0.1), noise_power=0.0)
    assert Config.from_dict({"noise_max": 0.02}).noise_power == 1.0  # old config.json files load


# --------------------------------------------------------------------------------------------------
# gray_prob: gray crops for an RGB model.


def test_gray_prob_one_gives_gray_crops_of_the_same_patches(tmp_path):
    root = str(_random_folder(tmp_path))
    default = _take(iter(_train(root, seed=1)), 3)
    gray = _take(iter(_train(root, seed=1, gray_prob=1.0)), 3)
    for d, g in zip(default, gray):
        s = g["sharp"]
        assert s.shape == d["sharp"].shape and s.dtype == np.float32
        np.testing.assert_array_equal(s[..., 0], s[..., 1])
        np.testing.assert_array_equal(s[..., 0], s[..., 2])
        # Same crop and flip (drawn before the gray draw), made BT.601 luminance.
        np.testing.assert_allclose(s[..., 0], d["sharp"] @ LUMA, atol=1e-6)
        assert np.ptp(d["sharp"] - d["sharp"][..., :1]) > 0.1  # the default crops are colour
        # Blurred from the gray crop (noise 0): equal channels too, and the recorded kernel holds.
        np.testing.assert_allclose(g["blurred"][..., 0], g["blurred"][..., 2], atol=1e-6)
        for blurred, sharp, kernel in zip(g["blurred"], g["sharp"], g["kernel"]):
            np.testing.assert_allclose(blurred, data.blur_host(sharp, kernel), atol=1e-6)


def test_gray_prob_zero_is_exactly_the_default_and_half_mixes(tmp_path):
    root = str(_random_folder(tmp_path))
    default = _take(iter(_train(root, seed=5, noise=0.02, motion_prob=0.5)), 3)
    zero = _take(iter(_train(root, seed=5, noise=0.02, motion_prob=0.5, gray_prob=0.0)), 3)
    for x, y in zip(default, zero):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    # And the draws are those of the transform before gray_prob existed: crop, flip, degradation.
    image = np.random.default_rng(0).random((24, 24, 3), dtype=np.float32)
    degradation = data.Degradation(3, (0.5, 2.0), 0.02, 0.5)
    for seed in range(5):
        got = data.TrainTransform(16, degradation, gray_prob=0.0)({"image": image},
                                                                  np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        (sharp,) = _dihedral(_random_crop([image], 16, rng), rng)
        blurred, kernel = degradation(sharp, rng)
        for k, v in {"blurred": blurred, "sharp": sharp, "kernel": kernel}.items():
            np.testing.assert_array_equal(got[k], v)
    half = np.concatenate([b["sharp"] for b in _take(iter(_train(root, batch_size=8,
                                                                  gray_prob=0.5)), 5)])
    is_gray = [np.array_equal(s[..., 0], s[..., 2]) for s in half]
    assert 5 <= sum(is_gray) <= 35  # 40 crops, p = 0.5


def test_gray_prob_refused_without_rgb_or_with_pairs(tmp_path):
    root = str(_random_folder(tmp_path))
    with pytest.raises(ValueError, match="gray_prob"):
        _train(root, channels=1, gray_prob=0.5)
    with pytest.raises(ValueError, match="gray_prob"):
        _train(root, gray_prob=1.5)
    pairs = tmp_path / "pairs"
    _random_folder(pairs / "blur", n=2)
    _random_folder(pairs / "sharp", n=2)
    with pytest.raises(DataError, match="gray_prob.*pairs"):
        _train(str(pairs), gray_prob=0.5)


def test_config_gray_prob():
    Config(steps=1, gray_prob=0.3).validate()
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="--gray_prob"):
            Config(steps=1, gray_prob=bad).validate()
    with pytest.raises(ConfigError, match="--gray_prob"):
        Config(steps=1, channels=1, gray_prob=0.5).validate()
    Config(steps=1, channels=1, gray_prob=0.0).validate()


# --------------------------------------------------------------------------------------------------
# Several training folders.


def test_comma_list_concatenates_folders_with_unique_names(tmp_path):
    a = _random_folder(tmp_path / "a" / "train", n=3, seed=1)
    b = _random_folder(tmp_path / "b" / "train", n=4, size=(30, 20), seed=2)  # same file names
    source = data.open_source(f"{a},{b}")
    assert isinstance(source, ConcatSource) and len(source) == 7
    assert len(set(source.names)) == 7
    assert source.names[0] == "0_train/img0.png" and source.names[3] == "1_train/img0.png"
    parts = [data.ImageFolder(a), data.ImageFolder(b)]
    for i, (part, j) in enumerate([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (1, 3)]):
        example = source[i]
        np.testing.assert_array_equal(example["image"], parts[part][j]["image"])
        assert example["label"] == -1 and example["name"] == source.names[i]
    assert source.path_of(3) == b / "img0.png" and source.sizes[3] == (30, 20)
    assert source[0]["image"] is source[0]["image"]  # small set: cached once decoded
    assert source[1:3].names == source.names[1:3]


def test_builtin_token_and_labels_dropped(tmp_path):
    classes = tmp_path / "classes"
    _random_folder(classes / "cat", n=2)
    _random_folder(classes / "dog", n=2, seed=3)
    assert {e["label"] for e in data.ImageFolder(classes)} == {0, 1}  # alone: classes
    source = data.open_source(f"builtin,{classes}")
    assert len(source) == len(data.BUILTIN_TRAIN) + 4
    assert source.names[0] == "0_builtin/" + data.BUILTIN_TRAIN[0]
    assert {source[i]["label"] for i in range(len(source))} == {-1}
    test = data.open_source(f"builtin,{classes}", split="test")  # `builtin` follows the split
    assert len(test) == len(data.BUILTIN_TEST) + 4


def test_training_on_a_list_reads_every_folder(tmp_path):
    a = _constant_folder(tmp_path / "a", [0, 30, 60])
    b = _constant_folder(tmp_path / "b", [90, 120])
    batches = _take(iter(_train(f"{a},{b}", batch_size=5, seed=0)), 4)
    seen = {int(round(v * 255)) for batch in batches for v in batch["sharp"].mean(axis=(1, 2, 3))}
    assert seen == {0, 30, 60, 90, 120}
    again = _take(iter(_train(f"{a},{b}", batch_size=5, seed=0)), 4)
    for x, y in zip(batches, again):
        np.testing.assert_array_equal(x["blurred"], y["blurred"])


def test_small_image_in_one_folder_named_or_dropped(tmp_path):
    a = _random_folder(tmp_path / "a", n=2)
    b = _random_folder(tmp_path / "b", n=1)
    _png(b / "tiny.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"tiny\.png is 8x8"):
        _train(f"{a},{b}")
    with pytest.warns(data.DataWarning, match=r"tiny\.png"):
        batch = next(iter(_train(f"{a},{b}", skip_bad=True)))
    assert batch["sharp"].shape == (4, 16, 16, 3)


def test_bad_lists_name_the_folder(tmp_path):
    a = _random_folder(tmp_path / "a", n=2)
    with pytest.raises(DataError, match="empty folder name"):
        data.open_source(f"{a},")
    with pytest.raises(DataError, match="empty folder name"):
        data.open_source(f"{a},,builtin")
    missing = tmp_path / "missing"
    with pytest.raises(DataError, match=f"{missing} does not exist"):
        data.open_source(f"{a},{missing}")
    pairs = tmp_path / "pairs"
    _random_folder(pairs / "blur", n=2)
    _random_folder(pairs / "sharp", n=2)
    with pytest.raises(DataError, match=f"{pairs} holds blur/ and sharp/ pairs"):
        data.open_source(f"builtin,{pairs}")
    with pytest.raises(DataError, match="pairs"):
        _train(f"{a},{pairs}")


def test_folder_with_a_comma_in_its_name_is_one_folder(tmp_path):
    odd = _random_folder(tmp_path / "x,y", n=2)
    source = data.open_source(str(odd))
    assert isinstance(source, data.ImageFolder) and len(source) == 2


def test_contrast_min_scales_each_crop_about_its_mean_and_blurs_the_scaled_crop(tmp_path):
    root = str(_random_folder(tmp_path))
    default = _take(iter(_train(root, seed=3)), 3)
    faint = _take(iter(_train(root, seed=3, contrast_min=0.25)), 3)
    factors = []
    for d, f in zip(default, faint):
        for s1, sc, blurred, kernel in zip(d["sharp"], f["sharp"], f["blurred"], f["kernel"]):
            m1, mc = s1.mean(axis=(0, 1)), sc.mean(axis=(0, 1))
            np.testing.assert_allclose(mc, m1, atol=1e-5)  # same crop, mean kept
            c = float(np.sum((sc - mc) * (s1 - m1)) / np.sum((s1 - m1) ** 2))
            np.testing.assert_allclose(sc - mc, c * (s1 - m1), atol=1e-5)  # one factor per crop
            factors.append(c)
            np.testing.assert_allclose(blurred, data.blur_host(sc, kernel), atol=1e-6)  # noise 0
    assert 0.25 <= min(factors) and max(factors) <= 1.0 and np.ptp(factors) > 0.1, factors
    same = _take(iter(_train(root, seed=3, contrast_min=1.0)), 3)  # 1: nothing drawn, as before
    for d, s in zip(default, same):
        for k in d:
            np.testing.assert_array_equal(d[k], s[k])


def test_contrast_min_refused_out_of_range_or_with_pairs(tmp_path):
    root = str(_random_folder(tmp_path))
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="contrast_min"):
            _train(root, contrast_min=bad)
        with pytest.raises(ConfigError, match="--contrast_min"):
            Config(steps=1, contrast_min=bad).validate()
    pairs = tmp_path / "pairs"
    _random_folder(pairs / "blur", n=2)
    _random_folder(pairs / "sharp", n=2)
    with pytest.raises(DataError, match="contrast_min.*pairs"):
        _train(str(pairs), contrast_min=0.5)


def test_eval_contrast_makes_fainter_scenes_with_the_same_blur(tmp_path):
    root = str(_random_folder(tmp_path, n=2))
    plain = data.make_eval_dataset(root, kernel_size=3, noise=0.0, sigma_range=(0.5, 2.0))
    faint = data.make_eval_dataset(root, kernel_size=3, noise=0.0, sigma_range=(0.5, 2.0), contrast=0.3)
    for p, f in zip(plain, faint):
        mean = p["sharp"].mean(axis=(0, 1))
        np.testing.assert_allclose(f["sharp"], mean + 0.3 * (p["sharp"] - mean), atol=1e-6)
        np.testing.assert_array_equal(f["kernel"], p["kernel"])
        np.testing.assert_allclose(f["blurred"], data.blur_host(f["sharp"], f["kernel"]), atol=1e-6)
    with pytest.raises(ValueError, match="contrast"):
        data.make_eval_dataset(root, kernel_size=3, contrast=0.0)
    with pytest.raises(ConfigError, match="--eval_contrast"):
        Config(steps=1, eval_contrast=1.5).validate()
