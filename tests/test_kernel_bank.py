"""The bank of classical kernel estimates that a warm-started MGSTNet trains from (issue 29)."""

import numpy as np
import pytest

from unroll import kernels, metrics
from unroll.classical import bank as kbank
from unroll.config import Config, ConfigError
from unroll.data import Degradation, blur_host
from unroll.data.pipeline import TrainTransform


def _source(count=3, side=64, seed=0):
    """Blocky textured images: list items like a source's, {"image": [H, W, 3]}."""
    rng = np.random.default_rng(seed)
    return [{"image": np.kron(rng.random((side // 4, side // 4, 3)), np.ones((4, 4, 1))).astype(np.float32)}
            for _ in range(count)]


DEGRADATION = Degradation(7, (0.5, 2.0), 0.0, motion_prob=1.0)


def test_draw_turns_both_kernels_alike_and_covers_the_eight_symmetries():
    h = kernels.motion(7, np.random.default_rng(1))
    b = kbank.KernelBank(h[None], h[None].copy())
    seen = set()
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, e = b.draw(rng)
        np.testing.assert_array_equal(a, e)
        assert a.dtype == np.float32 and abs(float(a.sum()) - 1) < 1e-5
        seen.add(a.tobytes())
    dihedral = {np.ascontiguousarray(np.rot90(f, t)).astype(np.float32).tobytes()
                for f in (h, h[:, ::-1]) for t in range(4)}
    assert seen == dihedral


def test_a_bank_needs_pairs_of_one_shape():
    with pytest.raises(ValueError, match="one shape"):
        kbank.KernelBank(np.zeros((2, 7, 7)), np.zeros((2, 5, 5)))


def test_build_resumes_where_it_stopped_and_equals_a_build_at_once(tmp_path):
    once = kbank.build(tmp_path / "once.npz", _source(), DEGRADATION, 5, crop=32, chunk=5)

    def stop_after_first_chunk(done, total):
        if done < total:
            raise KeyboardInterrupt

    path = tmp_path / "twice.npz"
    with pytest.raises(KeyboardInterrupt):
        kbank.build(path, _source(), DEGRADATION, 5, crop=32, chunk=2, progress=stop_after_first_chunk)
    assert not path.exists() and (tmp_path / "twice.npz.partial.npz").exists()
    again = kbank.build(path, _source(), DEGRADATION, 5, crop=32, chunk=2)
    assert not (tmp_path / "twice.npz.partial.npz").exists()
    np.testing.assert_array_equal(again.kernels, once.kernels)
    np.testing.assert_allclose(again.estimates, once.estimates, atol=1e-6)
    # A complete bank is read back, not rebuilt; one of another size is refused, not overwritten.
    assert len(kbank.build(path, [], DEGRADATION, 5, crop=32)) == 5
    with pytest.raises(ValueError, match="holds 5 pairs"):
        kbank.build(path, _source(), DEGRADATION, 6, crop=32)


def test_the_estimates_are_kernels_and_closer_to_the_truth_than_the_uniform_guess(tmp_path):
    b = kbank.build(tmp_path / "b.npz", _source(4, 96), DEGRADATION, 8, crop=64)
    assert b.estimates.shape == (8, 7, 7)
    assert np.all(b.estimates >= 0) and np.allclose(b.estimates.sum(axis=(1, 2)), 1, atol=1e-4)
    est = np.mean([float(metrics.mnc(e, h)[0]) for e, h in zip(b.estimates, b.kernels)])
    flat = np.mean([float(metrics.mnc(kernels.uniform(7), h)[0]) for h in b.kernels])
    assert est > flat + 0.1, (est, flat)


def test_images_smaller_than_the_crop_are_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 128 px"):
        kbank.build(tmp_path / "b.npz", _source(side=64), DEGRADATION, 2, crop=128)


def test_the_train_transform_blurs_with_the_banks_kernel_and_gives_its_estimate():
    h = kernels.motion(7, np.random.default_rng(2))
    h0 = kernels.gaussian(7, 1.0)
    b = kbank.KernelBank(h[None], h0[None])
    transform = TrainTransform(32, DEGRADATION, initial_kernels=True, kernel_bank=b)
    out = transform(_source(1)[0], np.random.default_rng(0))
    np.testing.assert_allclose(out["blurred"], blur_host(out["sharp"], out["kernel"]), atol=1e-6)
    # the estimate under the same symmetry as the kernel
    for f in (h, h[:, ::-1]):
        for t in range(4):
            if np.array_equal(np.rot90(f, t), out["kernel"]):
                g0 = h0[:, ::-1] if f is not h else h0
                np.testing.assert_allclose(out["h0"], np.rot90(g0, t), atol=1e-7)
                return
    pytest.fail("the kernel is not a symmetry of the bank's")


def test_config_kernel_bank_needs_a_warm_start():
    assert Config(steps=1, kernel_init="classical", kernel_bank=64).validate().kernel_bank == 64
    with pytest.raises(ConfigError, match="--kernel_bank"):
        Config(steps=1, kernel_bank=64).validate()
    with pytest.raises(ConfigError, match="--kernel_bank"):
        Config(steps=1, kernel_init="classical", kernel_bank=-1).validate()
