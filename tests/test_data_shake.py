"""Tests of the camera-shake training options: `shake_prob` (kernels.shake), `quantize` (8 bits) and
`initial_kernels` (an "h0" per example from kernels.perturb), and that with them off the batches
are exactly those of the pipeline before they existed."""

import numpy as np
import pytest
from test_data import _paired_folder, _random_folder
from test_data_options import _take, _train as _train_options

from unroll import data, kernels
from unroll.config import Config, ConfigError
from unroll.data import DataError
from unroll.data.pipeline import _dihedral, _random_crop


def _train(source, **kw):
    return _train_options(source, **{"kernel_size": 5, **kw})


def _reference_transform(image, rng, patch, kernel_size, sigma_range, noise, motion_prob):
    """The training transform as it was before shake_prob / quantize / initial_kernels, written out:
    crop, dihedral, [motion draw], kernel, noise."""
    (sharp,) = _dihedral(_random_crop([image], patch, rng), rng)
    if motion_prob > 0 and rng.random() < motion_prob:
        kernel = kernels.motion(kernel_size, rng)
    else:
        kernel = kernels.gaussian(kernel_size, float(rng.uniform(*sigma_range)))
    blurred = data.blur_host(sharp, kernel)
    if noise > 0:
        blurred += np.float32(noise) * rng.standard_normal(blurred.shape, dtype=np.float32)
    return {"blurred": blurred, "sharp": sharp, "kernel": kernel}


@pytest.mark.parametrize("motion_prob", [0.0, 0.5, 1.0])
def test_defaults_draw_exactly_what_the_pipeline_drew_before(motion_prob):
    image = np.random.default_rng(0).random((24, 24, 3), dtype=np.float32)
    degradation = data.Degradation(5, (0.5, 2.0), 0.02, motion_prob)
    assert degradation == data.Degradation(5, (0.5, 2.0), 0.02, motion_prob, 0.0, False)
    transform = data.TrainTransform(16, degradation)
    for seed in range(6):
        got = transform({"image": image}, np.random.default_rng(seed))
        want = _reference_transform(image, np.random.default_rng(seed), 16, 5, (0.5, 2.0), 0.02,
                                    motion_prob)
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_pipeline_defaults_equal_the_options_off(tmp_path):
    root = str(_random_folder(tmp_path, n=4, size=(24, 28)))
    default = _take(iter(_train(root, seed=3, noise=0.01, motion_prob=0.5)), 2)
    off = _take(iter(_train(root, seed=3, noise=0.01, motion_prob=0.5, shake_prob=0.0,
                            quantize=False, initial_kernels=False)), 2)
    for x, y in zip(default, off):
        assert x.keys() == y.keys() == {"blurred", "sharp", "kernel"}
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


# --------------------------------------------------------------------------------------------------
# shake_prob.


def test_kernel_kind_follows_one_draw_in_motion_then_shake_then_gaussian():
    degradation = data.Degradation(15, (1.0, 3.0), motion_prob=0.3, shake_prob=0.4)
    kinds = []
    for seed in range(60):
        got = degradation.sample_kernel(np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        pick = rng.random()
        kind = "motion" if pick < 0.3 else "shake" if pick < 0.7 else "gaussian"
        want = (kernels.motion(15, rng) if kind == "motion" else kernels.shake(15, rng)
                if kind == "shake" else kernels.gaussian(15, float(rng.uniform(1.0, 3.0))))
        np.testing.assert_array_equal(got, want)
        kinds.append(kind)
    assert all(10 <= kinds.count(k) <= 35 for k in ("motion", "shake", "gaussian"))
    only_shake = data.Degradation(15, shake_prob=1.0)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        rng.random()  # the draw of the kind
        np.testing.assert_array_equal(only_shake.sample_kernel(np.random.default_rng(seed)),
                                      kernels.shake(15, rng))


def test_shake_prob_is_validated():
    data.Degradation(15, motion_prob=0.8, shake_prob=0.2)  # sums to 1 up to rounding
    for motion, shake in ((0.8, 0.3), (0.0, -0.1), (0.0, 1.5)):
        with pytest.raises(ValueError, match="shake_prob"):
            data.Degradation(15, motion_prob=motion, shake_prob=shake)
    Config(steps=1, motion_prob=0.7, shake_prob=0.3).validate()
    for motion, shake in ((0.7, 0.4), (0.0, -0.1)):
        with pytest.raises(ConfigError, match="^--shake_prob=.*motion_prob"):
            Config(steps=1, motion_prob=motion, shake_prob=shake).validate()
    old = Config.from_dict({"motion_prob": 0.8})  # a config.json from before these fields
    assert old.shake_prob == 0.0 and old.quantize is False


def test_synthetic_shake_blur_is_recorded_exactly(tmp_path):
    root = str(_random_folder(tmp_path, n=4, size=(40, 40)))
    batch = next(iter(_train(root, patch_size=32, kernel_size=15, shake_prob=1.0)))
    for blurred, sharp, kernel in zip(batch["blurred"], batch["sharp"], batch["kernel"]):
        assert not np.allclose(kernel, kernel.T, atol=1e-6)  # not a Gaussian
        np.testing.assert_allclose(blurred, data.blur_host(sharp, kernel), atol=1e-6)


# --------------------------------------------------------------------------------------------------
# quantize.


def test_quantize_rounds_the_noisy_image_to_8_bits_and_draws_nothing():
    sharp = np.zeros((20, 20, 3), np.float32)
    sharp[:, 10:] = 1  # black and white: the noise leaves [0, 1] on both sides
    plain = data.Degradation(5, noise=0.05)
    quantized = data.Degradation(5, noise=0.05, quantize=True)
    for seed in range(4):
        b, k = plain(sharp, np.random.default_rng(seed))
        q, kq = quantized(sharp, np.random.default_rng(seed))
        np.testing.assert_array_equal(k, kq)
        assert q.dtype == np.float32 and q.min() >= 0 and q.max() <= 1
        levels = q * 255
        np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
        assert b.min() < 0 and b.max() > 1  # clipping is exercised
        np.testing.assert_allclose(q, np.clip(b, 0, 1), atol=0.5 / 255 + 1e-6)


def test_quantize_and_shake_reach_the_evaluation_set(tmp_path):
    root = str(_random_folder(tmp_path, n=2, size=(30, 30)))
    plain = data.make_eval_dataset(root, kernel_size=9, noise=0.01)
    ev = data.make_eval_dataset(root, kernel_size=9, noise=0.01, quantize=True, shake_prob=1.0)
    for e, p in zip(ev, plain):
        np.testing.assert_allclose(e["blurred"] * 255, np.round(e["blurred"] * 255), atol=1e-4)
        assert not np.allclose(e["kernel"], p["kernel"])  # a shake kernel, not the Gaussian
    from unroll.train.evaluation import make_eval_set

    config = Config(steps=1, test_dir=root, kernel_size=9, patch_size=16, noise=0.01, quantize=True,
                    shake_prob=1.0)
    for e, c in zip(ev, make_eval_set(config)):
        np.testing.assert_array_equal(e["blurred"], c["blurred"])


# --------------------------------------------------------------------------------------------------
# initial_kernels.


def test_initial_kernels_add_a_perturbed_kernel_drawn_last():
    image = np.random.default_rng(1).random((24, 24, 3), dtype=np.float32)
    degradation = data.Degradation(7, (0.5, 2.0), 0.01, motion_prob=0.5, shake_prob=0.5)
    for seed in range(5):
        got = data.TrainTransform(16, degradation, initial_kernels=True)({"image": image},
                                                                        np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        want = data.TrainTransform(16, degradation)({"image": image}, rng)
        want["h0"] = kernels.perturb(want["kernel"], rng)
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_pipeline_batches_carry_h0(tmp_path):
    root = str(_random_folder(tmp_path, n=4, size=(24, 28)))
    without = _take(iter(_train(root, seed=4, shake_prob=0.5)), 2)
    with_h0 = _take(iter(_train(root, seed=4, shake_prob=0.5, initial_kernels=True)), 2)
    for a, b in zip(without, with_h0):
        assert b["h0"].shape == b["kernel"].shape == (4, 5, 5) and b["h0"].dtype == np.float32
        np.testing.assert_allclose(b["h0"].sum(axis=(1, 2)), 1.0, rtol=1e-5)
        assert (b["h0"] >= 0).all() and not np.allclose(b["h0"], b["kernel"])
        for key in a:  # drawn after everything else: the rest of the batch is unchanged
            np.testing.assert_array_equal(a[key], b[key])


def test_initial_kernels_for_pairs_need_their_kernels(tmp_path):
    pairs = _paired_folder(tmp_path / "p")
    batch = next(iter(_train(str(pairs), batch_size=2, kernel_size=7, initial_kernels=True)))
    assert batch["h0"].shape == batch["kernel"].shape == (2, 7, 7)
    no_kernels = tmp_path / "q"
    _random_folder(no_kernels / "blur", n=2, size=(24, 24))
    _random_folder(no_kernels / "sharp", n=2, size=(24, 24))
    with pytest.raises(DataError, match="initial_kernels.*kernels/"):
        _train(str(no_kernels), initial_kernels=True)
