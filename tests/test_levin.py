"""The Levin benchmark protocol (`unroll.levin`) against independent references."""

import numpy as np
import pytest
from scipy import ndimage
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from unroll import levin


def _image(size=96):
    x = skdata.camera()[100:100 + size, 150:150 + size].astype(np.float64) / 255
    return ndimage.gaussian_filter(x, 0.7)  # a little smooth, so that interpolation is accurate


@pytest.mark.parametrize("shift", [(1.25, -2.5), (-3.75, 0.5), (2.0, 3.0)])
def test_a_known_subpixel_shift_is_recovered(shift):
    truth = _image()
    # The estimate's content at y + shift is the truth's at y: est(y) = truth(y - shift), by an
    # independent interpolator (cubic spline), not the protocol's bilinear one.
    est = ndimage.shift(truth, shift, order=3, mode="nearest")
    s = levin.aligned_scores(est.astype(np.float32), truth.astype(np.float32), crop=12)
    assert s.shift == shift
    assert s.psnr > 35


def test_integer_shift_is_exact():
    truth = _image().astype(np.float32)
    est = np.roll(truth, (3, -4), axis=(0, 1))
    s = levin.aligned_scores(est, truth, crop=12)
    assert s.shift == (3.0, -4.0)
    assert s.ssd == 0 and s.psnr == float("inf")


def test_metrics_equal_scikit_image_on_aligned_inputs():
    rng = np.random.default_rng(0)
    truth = _image().astype(np.float32)
    est = np.clip(truth + 0.03 * rng.normal(size=truth.shape), 0, 1).astype(np.float32)
    # No shift search (max_shift=0): with noise, a half-pixel bilinear shift averages the noise away
    # and wins the SSD search, which is the protocol's (known) behaviour, not the metric's.
    s = levin.aligned_scores(est, truth, crop=15, max_shift=0)
    assert s.shift == (0.0, 0.0)
    t, e = truth[15:-15, 15:-15].astype(np.float64), est[15:-15, 15:-15].astype(np.float64)
    assert s.psnr == pytest.approx(peak_signal_noise_ratio(t, e, data_range=1.0), abs=1e-4)
    ref = structural_similarity(t, e, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert s.ssim == pytest.approx(ref, abs=1e-4)
    np.testing.assert_array_equal(s.aligned, est[15:-15, 15:-15])


def test_shift_grid_and_exhaustive_search_match_brute_force():
    assert len(levin.shift_grid()) == 41 and levin.shift_grid()[0] == -5 and levin.shift_grid()[-1] == 5
    rng = np.random.default_rng(1)
    truth = _image(48).astype(np.float32)
    est = (truth + 0.05 * rng.normal(size=truth.shape)).astype(np.float32)
    shifts = levin.shift_grid(1.0, 0.5)
    got = np.asarray(levin.shift_ssd(est, truth[4:-4, 4:-4], shifts.astype(np.float32), 4))
    y, x = np.mgrid[4:44, 4:44].astype(np.float64)
    for a, dy in enumerate(shifts):
        for b, dx in enumerate(shifts):  # scipy's bilinear sampling at (y + dy, x + dx)
            ref = ndimage.map_coordinates(est.astype(np.float64), [y + dy, x + dx], order=1)
            assert got[a, b] == pytest.approx(np.sum((ref - truth[4:-4, 4:-4]) ** 2), rel=1e-4)


def test_error_ratio_and_success_rate():
    assert levin.error_ratio(3.0, 1.5) == 2.0
    assert levin.success_rate([1.0, 2.0, 2.5, float("nan")], 2) == 0.5
    assert levin.success_rate([1.0, 2.0, 2.5, float("nan")], 3) == 0.75
    with pytest.raises(ValueError):
        levin.error_ratio(1.0, 0.0)


def test_bad_arguments_raise():
    x = np.zeros((40, 40), np.float32)
    with pytest.raises(ValueError, match="shape"):
        levin.aligned_scores(x, np.zeros((40, 41), np.float32))
    with pytest.raises(ValueError, match="crop"):
        levin.aligned_scores(x, x, crop=5, max_shift=5)


def _levin_root_or_skip():
    from unroll import datasets

    try:
        return datasets.levin2009()
    except datasets.DatasetNotFoundError as exc:
        pytest.skip(str(exc))


def test_loader_reads_the_benchmark_with_the_convolution_kernel():
    root = _levin_root_or_skip()
    ims = levin.load(names=["im2_kernel4"])
    (im,) = ims
    assert (im.image, im.kernel_index) == (2, 4)
    assert im.blurred.shape == im.sharp.shape == (255, 255) and im.blurred.dtype == np.float32
    np.testing.assert_allclose(im.kernel, im.stored_kernel[::-1, ::-1] / im.stored_kernel.sum(),
                               atol=1e-7)
    with pytest.raises(ValueError, match="unknown"):
        levin.load(names=["im9_kernel1"])
    with pytest.raises(FileNotFoundError):
        levin.load(root / "missing")


def test_benchmark_runner_writes_scores_and_reuses_finished_methods(tmp_path):
    import csv
    import json
    import subprocess
    import sys

    _levin_root_or_skip()
    root = levin.REPO
    cmd = [sys.executable, "-m", "experiments.levin", "--method=input", f"--workdir={tmp_path}",
           "--images=im1_kernel1,im3_kernel5"]
    first = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    u = np.load(tmp_path / "input" / "restored" / "im3_kernel5.npy")
    assert u.shape == (255, 255) and u.dtype == np.float32
    rows = list(csv.DictReader(open(tmp_path / "input" / "per_image.csv")))
    assert [r["name"] for r in rows] == ["im1_kernel1", "im3_kernel5"]
    ref = levin.aligned_scores(levin.load(names=["im1_kernel1"])[0].blurred,
                               levin.load(names=["im1_kernel1"])[0].sharp)
    assert float(rows[0]["psnr"]) == pytest.approx(ref.psnr, abs=1e-6)
    table = (tmp_path / "levin.md").read_text()
    assert "| input (2 images) |" in table and "SelfDeblur" in table and "published" in table
    again = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "reused" in again.stdout
    # Files of an earlier run cut short (a kill inside a write of an older version) are unfinished
    # work: redone with a note, never a traceback.
    summary, cache = tmp_path / "input" / "summary.json", tmp_path / "reference_ssd.json"
    whole = json.loads(summary.read_text()), json.loads(cache.read_text())
    for path in (summary, cache):
        path.write_text(path.read_text()[:40])
    redone = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert redone.returncode == 0 and "Traceback" not in redone.stderr, redone.stderr
    assert "reused" not in redone.stdout
    assert "summary.json cannot be read" in redone.stderr and "running input again" in redone.stderr
    assert "reference_ssd.json cannot be read" in redone.stderr
    assert json.loads(cache.read_text()) == pytest.approx(whole[1])
    assert json.loads(summary.read_text())["psnr"] == pytest.approx(whole[0]["psnr"])
    assert not list(tmp_path.rglob(".*.unroll-*"))
    bad = subprocess.run(cmd[:3] + ["--method=nope", f"--workdir={tmp_path}"], cwd=root,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:")
    assert len(bad.stderr.strip().splitlines()) == 1
