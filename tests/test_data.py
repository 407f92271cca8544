"""Tests of unroll.data: sources, decoding, degradation, grain pipeline, evaluation sets, bad input."""

import json
import re
import socket
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy.signal import convolve2d

from unroll import data, kernels, ops
from unroll.data import DataError

# --------------------------------------------------------------------------------------------------
# Helpers.


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _random_folder(root, n=6, size=(40, 48), seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        _png(root / f"img{i}.png", rng.integers(0, 256, size + (3,), dtype=np.uint8))
    return root


def _constant_folder(root, n):
    """Image i is constant with value 30 i / 255, so any patch of it names it (noise=0)."""
    for i in range(n):
        _png(root / f"c{i}.png", np.full((24, 24, 3), 30 * i, np.uint8))
    return root


def _ids(batch):
    return [int(round(v * 255 / 30)) for v in batch["sharp"].mean(axis=(1, 2, 3))]


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def _train(root, **kw):
    args = dict(patch_size=16, batch_size=4, process_index=0, process_count=1)
    args.update(kw)
    return data.make_train_dataset(str(root), **args)


def _second_moment_sigma(k):
    r = np.arange(k.shape[0]) - k.shape[0] // 2
    y, x = np.meshgrid(r, r, indexing="ij")
    return float(np.sqrt((k * (x ** 2 + y ** 2)).sum() / 2))


# --------------------------------------------------------------------------------------------------
# Pipeline: determinism, state, epochs, sharding.


def test_same_seed_same_batches_different_seed_different(tmp_path):
    root = _random_folder(tmp_path)
    a = _take(iter(_train(root, seed=3, noise=0.01)), 4)
    b = _take(iter(_train(root, seed=3, noise=0.01)), 4)
    c = _take(iter(_train(root, seed=4, noise=0.01)), 4)
    _assert_batches_equal(a, b)
    assert a[0]["blurred"].shape == (4, 16, 16, 3) and a[0]["blurred"].dtype == np.float32
    assert a[0]["kernel"].shape == (4, 15, 15) and a[0]["kernel"].dtype == np.float32
    assert not np.array_equal(a[0]["blurred"], c[0]["blurred"])
    assert not np.array_equal(a[0]["kernel"], c[0]["kernel"])


def test_iterator_state_round_trip_across_epochs(tmp_path):
    root = _random_folder(tmp_path)  # 6 images, 4 per batch: the batches below cross epochs
    it = iter(_train(root, seed=1))
    _take(it, 2)
    state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
    expected = _take(it, 4)
    fresh = iter(_train(root, seed=1))
    fresh.set_state(state)
    _assert_batches_equal(_take(fresh, 4), expected)


def test_epochs_are_permutations_reshuffled(tmp_path):
    root = _constant_folder(tmp_path, 6)
    it = iter(_train(root, patch_size=16, batch_size=1, kernel_size=3, seed=0))
    seen = [_ids(b)[0] for b in _take(it, 18)]
    epochs = [seen[i:i + 6] for i in range(0, 18, 6)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(6))
    assert len({tuple(e) for e in epochs}) > 1  # a new order in some epoch


@pytest.mark.parametrize("n", [6, 5])
def test_process_shards_are_disjoint_and_cover(tmp_path, n):
    root = _constant_folder(tmp_path, n)
    shards = []
    for p in range(2):
        ds = _train(root, batch_size=2, kernel_size=3, process_index=p, process_count=2)
        size = len(range(p, n, 2))
        ids = [i for b in _take(iter(ds), size) for i in _ids(b)]  # one epoch of this shard
        assert len(set(ids)) == size
        shards.append(set(ids))
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(range(n))


def test_batch_must_divide_among_processes(tmp_path):
    with pytest.raises(ValueError, match="divisible"):
        _train(_random_folder(tmp_path), batch_size=3, process_index=0, process_count=2)


def test_default_process_arguments_and_gray(tmp_path):
    root = _random_folder(tmp_path, n=2)
    batch = next(iter(data.make_train_dataset(str(root), patch_size=16, batch_size=2, channels=1)))
    assert batch["sharp"].shape == (2, 16, 16, 1)


def test_worker_processes_give_the_same_batches(tmp_path):
    # grain's worker processes read grain's own absl flags: parsed in an absl app (as the entry
    # points are), marked parsed here. The library itself never touches absl.
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    root = _random_folder(tmp_path)
    expected = _take(iter(_train(root, seed=2)), 3)
    it = iter(_train(root, seed=2, num_workers=2))
    try:
        _assert_batches_equal(_take(it, 3), expected)
    finally:
        it.close()


# --------------------------------------------------------------------------------------------------
# Degradation.


@pytest.mark.parametrize("motion", [0.0, 1.0])
def test_synthetic_blur_equals_ops_blur(tmp_path, motion):
    # Motion kernels are asymmetric: this also tells convolution from correlation.
    batch = next(iter(_train(_random_folder(tmp_path), motion_prob=motion, noise=0.0)))
    ref = ops.blur(jnp.asarray(batch["sharp"]), jnp.asarray(batch["kernel"]), "symmetric")
    np.testing.assert_allclose(batch["blurred"], np.asarray(ref), atol=2e-6)
    u, k = batch["sharp"][0], batch["kernel"][0]
    direct = np.stack([convolve2d(u[..., c], k, mode="same", boundary="symm") for c in range(3)], -1)
    np.testing.assert_allclose(data.blur_host(u, k), direct, atol=2e-6)


def test_noise_is_recorded_residual_with_requested_std(tmp_path):
    sigma_n = 0.05
    batch = next(iter(_train(_random_folder(tmp_path), patch_size=32, noise=sigma_n)))
    ref = ops.blur(jnp.asarray(batch["sharp"]), jnp.asarray(batch["kernel"]), "symmetric")
    noise = batch["blurred"] - np.asarray(ref)
    assert abs(noise.std() - sigma_n) < 0.03 * sigma_n  # 12k samples: std error ~0.6%
    assert abs(noise.mean()) < 0.003
    black = _constant_folder(tmp_path / "black", 1)  # c0.png is all zeros
    dark = next(iter(_train(black, batch_size=1, noise=sigma_n)))["blurred"]
    assert dark.min() < 0  # no clipping, by design: g = h * u + n exactly


def test_kernel_sampling_range_and_normalisation():
    lo, hi = 1.0, 4.0
    deg = data.Degradation(15, (lo, hi))
    ks = [deg.sample_kernel(np.random.default_rng(i)) for i in range(200)]
    # Truncation to 15x15 shrinks the moment, so compare with kernels at the range ends.
    m_lo, m_hi = (_second_moment_sigma(kernels.gaussian(15, s)) for s in (lo, hi))
    est = np.array([_second_moment_sigma(k) for k in ks])
    for k in ks:
        assert k.shape == (15, 15) and k.dtype == np.float32 and k.min() >= 0
        assert abs(k.sum() - 1) < 1e-5
    assert est.min() >= m_lo - 1e-4 and est.max() <= m_hi + 1e-4
    assert est.min() < _second_moment_sigma(kernels.gaussian(15, 1.3))  # the whole range is used
    assert est.max() > _second_moment_sigma(kernels.gaussian(15, 3.7))


def test_pipeline_kernels_in_paper_range(tmp_path):
    batches = _take(iter(_train(_random_folder(tmp_path), sigma_range=(0.2, 4.0))), 3)
    est = [_second_moment_sigma(k) for b in batches for k in b["kernel"]]
    assert min(est) >= _second_moment_sigma(kernels.gaussian(15, 0.2)) - 1e-4
    assert max(est) <= _second_moment_sigma(kernels.gaussian(15, 4.0)) + 1e-4


def test_motion_probability_mixes_kernel_kinds():
    deg = data.Degradation(15, (1.0, 4.0), motion_prob=0.5)
    ks = [deg.sample_kernel(np.random.default_rng(i)) for i in range(40)]
    isotropic = [np.allclose(k, k.T, atol=1e-6) and np.allclose(k, k[::-1], atol=1e-6) for k in ks]
    assert 5 < sum(isotropic) < 35


# --------------------------------------------------------------------------------------------------
# Evaluation sets.


def test_eval_fixed_per_image_and_independent_of_the_set(tmp_path):
    root = _random_folder(tmp_path / "all", n=3, size=(30, 50))
    a = data.make_eval_dataset(str(root), noise=0.01, seed=5)
    b = data.make_eval_dataset(str(root), noise=0.01, seed=5)
    assert len(a) == 3 and a.names == ["img0.png", "img1.png", "img2.png"]
    for x, y in zip(a, b):
        for key in ("blurred", "sharp", "kernel"):
            np.testing.assert_array_equal(x[key], y[key])
    assert a[0]["blurred"].shape == (30, 50, 3) and a[0]["label"] == -1 and a[0]["name"] == "img0.png"
    assert not np.array_equal(a[0]["kernel"], a[1]["kernel"])
    # The same file alone in another folder gets the same degradation (seeded by its name).
    alone = tmp_path / "one"
    alone.mkdir()
    (alone / "img1.png").write_bytes((root / "img1.png").read_bytes())
    single = data.make_eval_dataset(str(alone), noise=0.01, seed=5)
    np.testing.assert_array_equal(single[0]["blurred"], a[1]["blurred"])
    other_seed = data.make_eval_dataset(str(root), noise=0.01, seed=6)
    assert not np.array_equal(other_seed[1]["blurred"], a[1]["blurred"])


def test_eval_center_crop_and_sharding(tmp_path):
    root = _random_folder(tmp_path, n=3, size=(30, 50))
    ev = data.make_eval_dataset(str(root), center_crop=20)
    full = data.make_eval_dataset(str(root))
    assert ev[0]["sharp"].shape == (20, 20, 3)
    np.testing.assert_array_equal(ev[0]["sharp"], full[0]["sharp"][5:25, 15:35])
    parts = [data.make_eval_dataset(str(root), process_index=p, process_count=2).names
             for p in range(2)]
    assert sorted(parts[0] + parts[1]) == full.names and not set(parts[0]) & set(parts[1])


# --------------------------------------------------------------------------------------------------
# Sources and decoding.


def _paired_folder(root, kernel_fn=kernels.gaussian):
    rng = np.random.default_rng(0)
    for i, stem in enumerate(["a", "b", "sub/c"]):
        sharp = rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)
        k = kernels.motion(7, np.random.default_rng(i))
        blurred = data.blur_host(sharp.astype(np.float32) / 255, k)
        _png(root / "sharp" / f"{stem}.png", sharp)
        path = root / "blur" / f"{stem}.tif"  # different suffix: matched by stem
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, np.round(np.clip(blurred, 0, 1) * 65535).astype(np.uint16),
                         photometric="rgb")
        (root / "kernels" / stem).parent.mkdir(parents=True, exist_ok=True)
        np.save(root / "kernels" / f"{stem}.npy", k * 3.0)  # unnormalised on disk
    return root


def test_paired_folder_matching_and_kernels(tmp_path):
    root = _paired_folder(tmp_path / "p")
    src = data.PairedFolder(root)
    assert len(src) == 3 and src.names == ["a.png", "b.png", "sub/c.png"]
    ex = src[2]
    np.testing.assert_array_equal(ex["blurred"], data.load_image(root / "blur" / "sub/c.tif"))
    np.testing.assert_array_equal(ex["sharp"], data.load_image(root / "sharp" / "sub/c.png"))
    np.testing.assert_allclose(ex["kernel"], kernels.motion(7, np.random.default_rng(2)), atol=1e-6)
    ev = data.make_eval_dataset(str(root))  # detected as paired
    assert len(ev) == 3 and ev[1]["kernel"].shape == (7, 7) and ev[1]["name"] == "b.png"


def test_paired_images_smaller_than_the_kernel_and_kernels_larger_than_images_are_refused(tmp_path):
    root = _paired_folder(tmp_path / "p")
    with pytest.raises(DataError, match="smaller than the kernel size 41") as err:
        data.make_eval_dataset(str(root), kernel_size=41)  # the images are 36x40
    assert "\n" not in str(err.value)
    np.save(root / "kernels" / "a.npy", np.ones((37, 37)))
    with pytest.raises(DataError, match="a.npy is 37x37, larger than its image"):
        data.PairedFolder(root)


def test_paired_training_crops_stay_consistent_with_their_kernel(tmp_path):
    root = _paired_folder(tmp_path / "p")
    for batch in _take(iter(_train(root, patch_size=24, batch_size=3, seed=7)), 3):
        for g, u, k in zip(batch["blurred"], batch["sharp"], batch["kernel"]):
            m = k.shape[0] // 2  # away from the borders, the crop is the blur of the sharp crop
            inner = data.blur_host(u, k)[m:-m, m:-m]
            np.testing.assert_allclose(g[m:-m, m:-m], inner, atol=1e-4)


def test_class_subfolders_give_labels(tmp_path):
    rng = np.random.default_rng(0)
    for cls, n in (("Forest", 2), ("Airport", 1), ("Beach", 2)):
        for i in range(n):
            _png(tmp_path / cls / f"{i}.jpg", rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))
    src = data.ImageFolder(tmp_path)
    assert src.class_names == ("Airport", "Beach", "Forest")
    assert [src[i]["label"] for i in range(len(src))] == [0, 1, 1, 2, 2]
    ev = data.make_eval_dataset(str(tmp_path), kernel_size=5)
    assert ev[4]["class_name"] == "Forest" and ev[4]["label"] == 2
    assert {src[i]["label"] for i in range(5)} == {0, 1, 2}
    assert all(data.ImageFolder(tmp_path, labels=False)[i]["label"] == -1 for i in range(5))
    _png(tmp_path / "loose.png", np.zeros((20, 20, 3), np.uint8))  # not in a class folder
    assert data.ImageFolder(tmp_path).class_names == ()
    with pytest.raises(DataError, match="loose.png"):
        data.ImageFolder(tmp_path, labels=True)


def test_load_16bit_tiff_png_and_planar(tmp_path):
    arr = (np.arange(12 * 10 * 3).reshape(12, 10, 3) * 1000 % 65536).astype(np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", arr, photometric="rgb")
    np.testing.assert_allclose(data.load_image(tmp_path / "a.tif"), arr / 65535.0, atol=1e-7)
    tifffile.imwrite(tmp_path / "planar.tiff", np.moveaxis(arr, -1, 0), photometric="rgb",
                     planarconfig="separate")
    np.testing.assert_array_equal(data.load_image(tmp_path / "planar.tiff"),
                                  data.load_image(tmp_path / "a.tif"))
    gray16 = arr[..., 0]
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    out = data.load_image(tmp_path / "g16.png")
    assert out.shape == (12, 10, 3)
    np.testing.assert_allclose(out[..., 2], gray16 / 65535.0, atol=1e-7)
    assert data.image_size(tmp_path / "planar.tiff") == (12, 10)


def test_load_rgba_gray_luminance_and_float(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (8, 9, 4), dtype=np.uint8)
    _png(tmp_path / "rgba.png", rgba)
    np.testing.assert_allclose(data.load_image(tmp_path / "rgba.png"), rgba[..., :3] / 255.0,
                               atol=1e-7)  # alpha dropped, not composited
    gray = rgba[..., 0]
    _png(tmp_path / "gray.png", gray)
    g3 = data.load_image(tmp_path / "gray.png", channels=3)
    assert g3.shape == (8, 9, 3) and np.array_equal(g3[..., 0], g3[..., 2])
    np.testing.assert_allclose(data.load_image(tmp_path / "gray.png", 1)[..., 0], gray / 255.0,
                               atol=1e-7)
    lum = data.load_image(tmp_path / "rgba.png", channels=1)
    expected = (rgba[..., :3] / 255.0) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(lum[..., 0], expected, atol=1e-6)
    Image.fromarray(rgba[..., :2], mode="LA").save(tmp_path / "la.png")
    np.testing.assert_allclose(data.load_image(tmp_path / "la.png", 1)[..., 0], gray / 255.0,
                               atol=1e-7)
    f = np.linspace(0, 1, 30, dtype=np.float32).reshape(5, 6)
    tifffile.imwrite(tmp_path / "f.tif", f)
    np.testing.assert_array_equal(data.load_image(tmp_path / "f.tif", 1)[..., 0], f)
    tifffile.imwrite(tmp_path / "f255.tif", f * 255)
    with pytest.raises(DataError, match="f255.tif"):
        data.load_image(tmp_path / "f255.tif")


def test_save_image_round_trips(tmp_path):
    x = np.random.default_rng(0).random((10, 12, 3), dtype=np.float32)
    data.save_image(tmp_path / "out" / "x.png", x)
    np.testing.assert_allclose(data.load_image(tmp_path / "out" / "x.png"), x, atol=0.5 / 255 + 1e-6)
    data.save_image(tmp_path / "x.tif", x)
    np.testing.assert_allclose(data.load_image(tmp_path / "x.tif"), x, atol=0.5 / 65535 + 1e-6)
    assert tifffile.imread(tmp_path / "x.tif").dtype == np.uint16
    data.save_image(tmp_path / "g.png", x[..., :1])
    assert Image.open(tmp_path / "g.png").mode == "L"
    with pytest.raises(ValueError, match="unsupported"):
        data.save_image(tmp_path / "x.bmp", x)


def test_builtin_samples_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setitem(sys.modules, "pooch", None)  # importing the downloader would fail
    train, test = data.builtin_samples("train"), data.builtin_samples("test")
    assert len(train) == 10 and len(test) == 3 and not set(train.names) & set(test.names)
    for i in range(len(train)):
        img = train[i]["image"]
        assert img.shape[-1] == 3 and min(img.shape[:2]) >= 256 and img.dtype == np.float32
        assert 0 <= img.min() and img.max() <= 1 and img.std() > 0.02  # real content
    ev = data.make_eval_dataset(None)
    assert ev.names == list(data.BUILTIN_TEST) and ev[0]["blurred"].shape == (300, 451, 3)
    batch = next(iter(data.make_train_dataset(None, patch_size=64, batch_size=2,
                                              process_index=0, process_count=1)))
    assert batch["blurred"].shape == (2, 64, 64, 3)


# --------------------------------------------------------------------------------------------------
# Bad input.


def test_missing_empty_and_imageless_folders(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        data.ImageFolder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        data.make_train_dataset(str(tmp_path / "empty"), patch_size=16, batch_size=1)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="notes"):
        data.make_eval_dataset(str(tmp_path / "notes"))


def test_symlink_loop_is_walked_once(tmp_path):
    root = _random_folder(tmp_path / "set", n=2)
    (root / "sub").mkdir()
    _png(root / "sub" / "deep.png", np.zeros((20, 20, 3), np.uint8))
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)  # sub/loop -> set/
    assert data.ImageFolder(root).names == ["img0.png", "img1.png", "sub/deep.png"]


def test_corrupt_file_raises_or_is_skipped_with_a_warning(tmp_path):
    root = _random_folder(tmp_path, n=3)
    (root / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="bad.png"):
        data.ImageFolder(root)
    with pytest.warns(data.DataWarning, match="bad.png"):
        src = data.ImageFolder(root, skip_bad=True)
    assert len(src) == 3
    for f in root.glob("img*.png"):
        f.unlink()
    with pytest.warns(data.DataWarning), pytest.raises(DataError, match="no usable"):
        data.ImageFolder(root, skip_bad=True)  # never a silently empty set


def test_truncated_file_fails_on_decode_naming_it(tmp_path):
    root = _random_folder(tmp_path, n=2)
    good = (root / "img0.png").read_bytes()
    (root / "trunc.png").write_bytes(good[: len(good) // 2])  # header intact, pixels cut
    src = data.ImageFolder(root)
    index = src.names.index("trunc.png")
    with pytest.raises(DataError, match="trunc.png"):
        src[index]


def test_image_smaller_than_patch(tmp_path):
    root = _random_folder(tmp_path, n=2, size=(40, 40))
    _png(root / "tiny.png", np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(DataError, match="tiny.png"):
        _train(root, patch_size=32)
    with pytest.warns(data.DataWarning, match="tiny.png"):
        ds = _train(root, patch_size=32, skip_bad=True, batch_size=2)
    assert next(iter(ds))["sharp"].shape == (2, 32, 32, 3)
    with pytest.raises(DataError, match="tiny.png"):
        data.make_eval_dataset(str(root), kernel_size=21)


@pytest.mark.parametrize("orphan", ["blur", "sharp"])
def test_unpaired_files(tmp_path, orphan):
    root = _paired_folder(tmp_path / "p")
    partner = "sharp/a.png" if orphan == "blur" else "blur/a.tif"
    (root / partner).unlink()
    kept = "blur/a.tif" if orphan == "blur" else "sharp/a.png"
    with pytest.raises(DataError, match=re.escape(kept)):
        data.PairedFolder(root)
    with pytest.warns(data.DataWarning) as record:
        src = data.PairedFolder(root, skip_bad=True)
    messages = [str(w.message) for w in record]
    assert any(kept in m for m in messages) and any("kernels/a.npy" in m for m in messages)
    assert src.names == ["b.png", "sub/c.png"]


@pytest.mark.parametrize("bad", [np.ones((3, 5, 5)), np.ones((4, 4)), -np.eye(5), np.zeros((3, 3))])
def test_bad_kernel_files(tmp_path, bad):
    root = _paired_folder(tmp_path / "p")
    np.save(root / "kernels" / "b.npy", bad)
    with pytest.raises(DataError, match=re.escape("b.npy")):
        data.PairedFolder(root)


def test_missing_kernel_and_size_mismatch(tmp_path):
    root = _paired_folder(tmp_path / "p")
    (root / "kernels" / "a.npy").unlink()
    with pytest.raises(DataError, match="a.npy"):
        data.PairedFolder(root)
    root = _paired_folder(tmp_path / "q")
    _png(root / "sharp" / "b.png", np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(DataError, match="b.png"):
        data.PairedFolder(root)


# --------------------------------------------------------------------------------------------------
# Multi-band TIFF rasters.


def _bands_tiff(path, bands, planar=False, dtype=np.uint16, seed=0, **kw):
    arr = np.random.default_rng(seed).integers(0, 1000, (12, 14, bands)).astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.moveaxis(arr, -1, 0) if planar else arr,
                     planarconfig="separate" if planar else "contig", **kw)
    return arr


@pytest.mark.parametrize("planar", [False, True])
def test_multiband_tiff_loads_with_its_band_count(tmp_path, planar):
    arr = _bands_tiff(tmp_path / "ms.tif", 5, planar, photometric="minisblack")
    np.testing.assert_allclose(data.load_image(tmp_path / "ms.tif", channels=5), arr / 65535.0,
                               atol=1e-7)
    info = data.image_info(tmp_path / "ms.tif")
    assert (info.height, info.width, info.bands, info.alpha) == (12, 14, 5, False)


def test_band_count_mismatch_is_one_line_naming_file_and_counts(tmp_path):
    _bands_tiff(tmp_path / "ms.tif", 5, photometric="minisblack")
    for channels in (1, 3, 4):
        with pytest.raises(DataError) as err:
            data.load_image(tmp_path / "ms.tif", channels=channels)
        message = str(err.value)
        assert "ms.tif" in message and "5 bands" in message and f"{channels} channel" in message
        assert "\n" not in message
    # Four bands: alpha (declared in ExtraSamples) is dropped; RGB + near infrared is not alpha.
    rgba = _bands_tiff(tmp_path / "rgba.tif", 4, dtype=np.uint8, photometric="rgb",
                       extrasamples=["unassalpha"])
    np.testing.assert_allclose(data.load_image(tmp_path / "rgba.tif"), rgba[..., :3] / 255.0,
                               atol=1e-7)
    _bands_tiff(tmp_path / "rgbn.tif", 4, dtype=np.uint8, photometric="rgb",
                extrasamples=["unspecified"])
    with pytest.raises(DataError, match="rgbn.tif has 4 bands but 3"):
        data.load_image(tmp_path / "rgbn.tif")
    assert data.load_image(tmp_path / "rgbn.tif", channels=4).shape == (12, 14, 4)
    with pytest.raises(ValueError, match="channels"):
        data.load_image(tmp_path / "rgbn.tif", channels=0)


def test_sources_check_band_counts_from_headers(tmp_path):
    root = tmp_path / "scenes"
    for i in range(3):
        _bands_tiff(root / f"s{i}.tif", 5, planar=i == 1, seed=i, photometric="minisblack")
    src = data.ImageFolder(root, channels=5)
    assert src[0]["image"].shape == (12, 14, 5)
    _bands_tiff(root / "rgb.tif", 3, photometric="rgb")
    with pytest.raises(DataError, match="rgb.tif has 3 bands but 5"):
        data.ImageFolder(root, channels=5)  # at construction, not at the first access
    with pytest.warns(data.DataWarning, match="rgb.tif"):
        assert len(data.ImageFolder(root, channels=5, skip_bad=True)) == 3
    (root / "rgb.tif").unlink()
    ev = data.make_eval_dataset(str(root), channels=5, kernel_size=5, seed=1)
    example = ev[0]
    assert example["blurred"].shape == example["sharp"].shape == (12, 14, 5)
    np.testing.assert_allclose(example["blurred"], data.blur_host(example["sharp"],
                                                                   example["kernel"]), atol=1e-6)
    batch = next(iter(data.make_train_dataset(str(root), channels=5, patch_size=8, batch_size=2,
                                              kernel_size=5, process_index=0, process_count=1)))
    assert batch["sharp"].shape == (2, 8, 8, 5)


def test_paired_multiband_and_signed_tiffs(tmp_path):
    root = tmp_path / "pairs"
    _bands_tiff(root / "blur" / "a.tif", 4, photometric="minisblack")
    _bands_tiff(root / "sharp" / "a.tif", 4, seed=1, photometric="minisblack")
    assert data.PairedFolder(root, channels=4)[0]["blurred"].shape == (12, 14, 4)
    with pytest.raises(DataError, match="a.tif has 4 bands"):
        data.PairedFolder(root, channels=3)
    signed = np.array([[-32768, 0, 32767]], np.int16)
    tifffile.imwrite(tmp_path / "s.tif", signed)
    np.testing.assert_allclose(data.load_image(tmp_path / "s.tif", 1)[0, :, 0],
                               (signed[0] + 32768.0) / 65535.0, atol=1e-7)
    x = np.random.default_rng(0).random((6, 7, 5), dtype=np.float32)
    data.save_image(tmp_path / "x5.tif", x)
    np.testing.assert_allclose(data.load_image(tmp_path / "x5.tif", 5), x, atol=0.5 / 65535 + 1e-6)
