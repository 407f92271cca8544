"""Noise at inference (issue 34): `Model.deblur(noise=...)`, the training-range check, the deblur
job's per-input noise line, and eval at several noise levels (`--noise_levels`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unroll import data, kernels, noise, pretrained, train
from unroll.config import Config
from unroll.data.degradation import blur_host
from unroll.inference import deblur
from unroll.inference.model import Model
from unroll.models import registry

ROOT = Path(__file__).resolve().parents[1]
TINY = Config(stages=2, scales=1, kernel_rcabs=1, image_rcabs=1, features=8, kernel_features=4,
              kernel_size=7, channels=3, noise=0.001, noise_max=0.01)


@pytest.fixture(scope="module")
def model():
    return Model(TINY, *registry.build_split(TINY))


def _scene(seed=0, size=(40, 48), sigma=0.0):
    """A blurred smooth scene with texture, plus white noise of std `sigma`."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size[0], :size[1]] / 8.0
    sharp = 0.5 + 0.2 * np.sin(x)[..., None] * np.cos(y[..., None] + np.arange(3))
    sharp = sharp + 0.1 * (rng.random(size + (3,)) > 0.9)
    blurred = blur_host(sharp.astype(np.float32), kernels.gaussian(7, 1.2))
    return (blurred + sigma * rng.standard_normal(blurred.shape)).astype(np.float32)


def test_an_unconditional_model_ignores_the_noise_it_is_given(model):
    image = _scene(sigma=0.02)
    restored, kernel = model.deblur(image)
    for given in (0.0, 0.3):
        again, kernel_again = model.deblur(image, noise=given)
        np.testing.assert_array_equal(again, restored)
        np.testing.assert_array_equal(kernel_again, kernel)
    tiled = model.deblur(image, tile_size=24, tile_overlap=4)[0]
    np.testing.assert_array_equal(model.deblur(image, tile_size=24, tile_overlap=4, noise=0.1)[0], tiled)
    assert not model.noise_conditional and model.sigma(0.1) is None


@pytest.fixture(scope="module")
def conditional():
    config = Config(**{**TINY.__dict__, "noise_conditional": True})
    return Model(config, *registry.build_split(config))


def test_a_noise_conditional_model_reads_the_noise_given_or_estimated(conditional):
    image = _scene(sigma=0.02)
    clean, noisy = (conditional.deblur(image, noise=level)[0] for level in (0.0, 0.05))
    assert float(np.abs(clean - noisy).max()) > 1e-4  # the conditional path is used
    estimated = noise.estimate(image)
    np.testing.assert_allclose(conditional.deblur(image)[0],
                               conditional.deblur(image, noise=estimated)[0], atol=1e-5)
    # Tiles: one estimate on the whole scene for every tile, not one per tile.
    tiled = conditional.deblur(image, tile_size=24, tile_overlap=4)[0]
    np.testing.assert_array_equal(
        tiled, conditional.deblur(image, tile_size=24, tile_overlap=4, noise=estimated)[0])
    per_tile = conditional.deblur(image, tile_size=24, tile_overlap=4, noise=0.3)[0]
    assert float(np.abs(tiled - per_tile).max()) > 1e-4


@pytest.mark.parametrize("bad", [-0.01, float("nan"), float("inf")])
def test_negative_or_non_finite_noise_is_one_line_value_error(model, bad):
    with pytest.raises(ValueError, match="noise must be a finite standard deviation >= 0") as info:
        model.deblur(_scene(), noise=bad)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="noise must be"):
        model.predict(_scene()[None], noise=bad)


def test_the_range_warning_fires_far_outside_the_training_range_only(model):
    assert model.noise_range() == (0.001, 0.01)
    for inside in (0.0, 0.001, 0.005, 0.01, 0.0124):  # below 0.001 / 1.25 - 0.002 is impossible
        assert model.check_noise(inside) is None, inside
    for above in (0.02, 0.1):
        warning = model.check_noise(above)
        assert warning is not None and "above" in warning and "\n" not in warning
    fixed = Model(Config(**{**TINY.__dict__, "noise": 0.05, "noise_max": 0.0}), model.graphdef,
                  model.params)
    assert fixed.noise_range() == (0.05, 0.05)
    assert "below" in fixed.check_noise(0.0)
    assert fixed.check_noise(0.045) is None


def test_deblur_job_prints_one_noise_line_per_input_and_warns(tmp_path, model, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    data.save_image(photos / "calm.png", _scene(1))
    data.save_image(photos / "grainy.png", np.clip(_scene(2, sigma=0.08), 0, 1))
    deblur.deblur_files(model, [str(photos)], tmp_path / "out")
    lines = [line for line in capsys.readouterr().err.splitlines() if "noise" in line]
    assert len(lines) == 2, lines
    calm, grainy = sorted(lines)
    assert "calm.png: noise" in calm and "(estimated)" in calm and "warning" not in calm, calm
    assert "grainy.png: noise" in grainy and "warning: noise" in grainy and "above" in grainy, grainy
    estimated = float(grainy.split("noise ")[1].split()[0])
    assert estimated == pytest.approx(noise.estimate(data.load_image(photos / "grainy.png")), abs=1e-4)
    deblur.deblur_files(model, [str(photos / "calm.png")], tmp_path / "given", noise=0.005)
    line = next(line for line in capsys.readouterr().err.splitlines() if "calm.png: noise" in line)
    assert "noise 0.0050 (given)" in line
    deblur.deblur_files(model, [str(photos / "grainy.png")], tmp_path / "tiled", tile_size=24,
                        tile_overlap=4)  # streamed tiles: the scene's estimate, once
    line = next(line for line in capsys.readouterr().err.splitlines() if "grainy.png: noise" in line)
    assert line.split(" -> ")[0] == grainy.split(" -> ")[0]
    with pytest.raises(ValueError, match="noise must be"):
        deblur.deblur_files(model, [str(photos / "calm.png")], tmp_path / "bad", noise=-1.0)
    assert not (tmp_path / "bad").exists()


def test_noise_levels_table_has_a_row_per_level_and_input_psnr_falls(tmp_path, model):
    test_dir = tmp_path / "test"
    test_dir.mkdir()
    for i in range(2):
        data.save_image(test_dir / f"s{i}.png", np.clip(_scene(10 + i), 0, 1))
    config = Config(**{**TINY.__dict__, "test_dir": str(test_dir), "sigma_min": 1.0, "sigma_max": 2.0})
    levels = [0.0, 0.01, 0.05]
    rows = train.evaluate_noise_levels(train.make_predict(model.graphdef), model.params, config,
                                       levels, out_dir=tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "eval" / "noise_levels.json").read_text())
    assert [r["noise"] for r in saved["levels"]] == levels and saved["levels"] == rows
    table = (tmp_path / "run" / "eval" / "noise_levels.md").read_text()
    assert len([line for line in table.splitlines() if line.startswith("| 0.")]) == len(levels)
    inputs = [r["psnr_input"] for r in rows]
    assert inputs[0] > inputs[1] > inputs[2], inputs
    for r in rows:
        assert r["gain"] == pytest.approx(r["psnr"] - r["psnr_input"], abs=1e-4)
        assert r["worst_gain"] <= r["gain"] + 1e-6 and r["num_images"] == 2
        assert 0 <= r["below_input"] <= 2
    # The same blurred scenes at each level: the noise-free level equals the plain evaluation.
    plain = train.evaluate(train.make_predict(model.graphdef), model.params,
                           train.make_eval_set(config, noise=0.0), config)
    assert rows[0]["psnr_input"] == pytest.approx(plain["psnr_input"], abs=1e-5)
    assert rows[0]["psnr"] == pytest.approx(plain["psnr"], abs=1e-5)
    assert rows[2]["noise_estimated"] == pytest.approx(0.05, rel=0.3)


def _cli(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "experiments.mgstnet", *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


def test_cli_prints_the_noise_and_evaluates_at_noise_levels(tmp_path):
    name = pretrained.available()[0]
    image = tmp_path / "scene.png"
    data.save_image(image, np.clip(_scene(3, size=(48, 56), sigma=0.1), 0, 1))
    out = tmp_path / "out"
    ok = _cli(f"--pretrained={name}", "--mode=deblur", f"--input={image}", f"--output_dir={out}")
    assert ok.returncode == 0, ok.stderr
    lines = [line for line in ok.stderr.splitlines() if line.startswith(f"{image}: noise")]
    assert len(lines) == 1 and "(estimated)" in lines[0] and "warning: noise" in lines[0], ok.stderr
    bad = _cli(f"--pretrained={name}", "--mode=deblur", f"--input={image}", "--noise=0.05",
               f"--output_dir={tmp_path / 'bad'}")
    assert bad.returncode == 2 and "--image_noise" in bad.stderr and "Traceback" not in bad.stderr
    test_dir = tmp_path / "test"
    test_dir.mkdir()
    data.save_image(test_dir / "a.png", np.clip(_scene(4, size=(48, 48)), 0, 1))
    evaluated = _cli(f"--pretrained={name}", "--mode=eval", f"--test_dir={test_dir}",
                     f"--workdir={tmp_path / 'ev'}", "--noise_levels=0,0.02")
    assert evaluated.returncode == 0, evaluated.stderr
    rows = json.loads((tmp_path / "ev" / "eval" / "noise_levels.json").read_text())["levels"]
    assert [r["noise"] for r in rows] == [0.0, 0.02] and rows[0]["psnr_input"] > rows[1]["psnr_input"]
    assert "output PSNR" in evaluated.stdout
    wrong = _cli(f"--pretrained={name}", "--mode=eval", f"--test_dir={test_dir}", "--noise_levels=0,x")
    assert wrong.returncode == 2 and "--noise_levels" in wrong.stderr and "Traceback" not in wrong.stderr


def test_the_global_kernel_image_path_of_a_conditional_model_reads_sigma(conditional):
    import jax.numpy as jnp
    g = jnp.asarray(_scene(sigma=0.02))[None]
    for sigma in (0.0, 0.05):
        out = conditional._apply(conditional.params, g, None, sigma)
        own = tuple(out.kernels)
        np.testing.assert_allclose(conditional._image_path(conditional.params, g, own, sigma),
                                   out.images[-1], atol=1e-5)
    restored, kernel = conditional.deblur(_scene(sigma=0.02), tile_size=24, tile_overlap=4,
                                          global_kernel=True)
    assert restored.shape == (40, 48, 3) and kernel.shape == (7, 7) and np.isfinite(restored).all()
