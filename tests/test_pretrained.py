"""The models shipped with the package: export and load by name, the CLI's --pretrained, and that each
shipped model restores blurred images it never saw better than the blurred input (and better than
the same network with fresh weights, so the test can fail)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_train import tiny_config

import unroll
from unroll import data, kernels, metrics, pretrained, train
from unroll.inference.model import Model
from unroll.models import registry

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, cwd=ROOT):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "experiments.mgstnet", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)


def test_export_then_load_by_name_gives_the_trained_network(tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    train.train_and_evaluate(tiny_config(), workdir)
    # The noise-levels table of an eval (--noise_levels) travels into metrics.json and the card.
    levels = [{"noise": n, "psnr_input": 25.0 - 10 * n, "psnr": 27.0, "gain": 2.0 + 10 * n,
               "worst_gain": 0.5, "worst_scene": "a.png", "below_input": 0, "num_images": 3}
              for n in (0.0, 0.01)]
    (workdir / "eval").mkdir(exist_ok=True)
    (workdir / "eval" / "noise_levels.json").write_text(json.dumps({"model": "mgstnet", "levels": levels}))
    folder = pretrained.export(workdir, "aerial", out_root=tmp_path / "shipped",
                               card=lambda config, scores: "\n".join(
                                   [f"# card: {config.stages} stages"]
                                   + pretrained.noise_section(scores["noise_levels"])))
    card = (folder / "MODEL_CARD.md").read_text()
    assert "| 0 | 25.00 | 27.00 | +2.00 | +0.50 | 0 of 3 |" in card
    assert "| 0.01 | 24.90 | 27.00 | +2.10 | +0.50 | 0 of 3 |" in card
    assert sorted(p.name for p in folder.iterdir()) == ["MODEL_CARD.md", "SHA256SUMS", "config.json",
                                                        "metrics.json", "params.npz"]
    assert set(pretrained.checksums(folder)) == {"MODEL_CARD.md", "config.json", "metrics.json",
                                                 "params.npz"}
    monkeypatch.setattr(pretrained, "ROOT", tmp_path / "shipped")
    shipped, trained = pretrained.load("aerial"), unroll.load(workdir, checkpoint="latest")
    assert shipped.step == trained.step == tiny_config().steps
    image = np.random.default_rng(0).random((1, 40, 40, 3), np.float32)
    for a, b in zip(shipped.predict(image), trained.predict(image)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert pretrained.metrics("aerial")["psnr"] == json.loads((workdir / "metrics.json").read_text())["psnr"]
    assert pretrained.metrics("aerial")["noise_levels"] == levels

    # A parameter file that does not fit its config is named, not a traceback deep in JAX.
    with np.load(folder / "params.npz") as stored:
        arrays = dict(stored)
    first = sorted(arrays)[0]
    arrays[first] = arrays[first][..., :1]
    np.savez(folder / "params.npz", **arrays)
    pretrained.write_checksums(folder)  # as if exported so: the checksums pass, the shapes do not
    with pytest.raises(pretrained.PretrainedError, match="params.npz: .* has shape"):
        pretrained.load("aerial")


def test_unknown_or_missing_names_are_clear(tmp_path, monkeypatch):
    with pytest.raises(pretrained.PretrainedError, match="one of aerial, motion"):
        pretrained.load("satellite")
    monkeypatch.setattr(pretrained, "ROOT", tmp_path)
    with pytest.raises(pretrained.PretrainedError, match="missing"):
        pretrained.load("aerial")


@pytest.mark.parametrize("name", pretrained.NAMES)
def test_shipped_checksums_cover_every_file_and_match(name):
    folder = pretrained.ROOT / name
    listed = pretrained.checksums(folder)
    assert set(listed) == {p.name for p in folder.iterdir() if p.name != pretrained.CHECKSUMS}
    pretrained.verify(folder)  # every file, the model card too
    # Independently of the module's reader: the sha256sum format.
    import hashlib
    for line in (folder / pretrained.CHECKSUMS).read_text().splitlines():
        digest, file = line.split("  ")
        assert hashlib.sha256((folder / file).read_bytes()).hexdigest() == digest


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _with_nan(path):  # re-exported with a NaN, checksums recorded anew: only the values are wrong
    with np.load(path) as stored:
        arrays = dict(stored)
    first = sorted(arrays)[0]
    arrays[first] = arrays[first].copy()
    arrays[first].flat[0] = np.nan
    np.savez_compressed(path, **arrays)
    pretrained.write_checksums(path.parent)


DAMAGE = {
    "params truncated": ("params.npz", _truncate, "params.npz does not match its SHA-256"),
    "params emptied": ("params.npz", lambda p: p.write_bytes(b""), "params.npz does not match"),
    "params missing": ("params.npz", Path.unlink, "params.npz is missing"),
    "params not finite": ("params.npz", _with_nan, "params.npz: .* not finite"),
    "config garbage": ("config.json", lambda p: p.write_text("{garbage"), "config.json does not match"),
    "metrics garbage": ("metrics.json", lambda p: p.write_text("[1, 2"), "metrics.json does not match"),
    "checksums missing": ("SHA256SUMS", Path.unlink, "SHA256SUMS is missing"),
}


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch):
    """A copy of the shipped `aerial` model that a test may damage, loaded by name."""
    shutil.copytree(pretrained.ROOT / "aerial", tmp_path / "aerial")
    monkeypatch.setattr(pretrained, "ROOT", tmp_path)
    return tmp_path / "aerial"


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_shipped_model_is_one_line_naming_the_file(shipped_copy, damage):
    file, spoil, expected = DAMAGE[damage]
    spoil(shipped_copy / file)
    with pytest.raises(pretrained.PretrainedError, match=expected) as err:
        unroll.load("aerial")
    assert "\n" not in str(err.value) and str(shipped_copy) in str(err.value)


def test_the_cli_reports_a_damaged_shipped_model_on_one_line(shipped_copy, tmp_path):
    _truncate(shipped_copy / "params.npz")
    image = tmp_path / "a.png"
    data.save_image(image, np.full((32, 32, 3), 0.5))
    script = ("import sys\nfrom pathlib import Path\nfrom unroll import pretrained\n"
              "pretrained.ROOT = Path(sys.argv[1])\nfrom experiments import mgstnet\n"
              "mgstnet.app.run(mgstnet.main, ['prog', '--pretrained=aerial', '--mode=deblur', "
              "f'--input={sys.argv[2]}', f'--output_dir={sys.argv[3]}'])\n")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path), str(image), str(tmp_path / "out")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1:] == [result.stderr.strip()]  # one line
    assert "params.npz does not match its SHA-256" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def _unseen(name):
    """A sharp image the model never trained on (a built-in *test* photograph) and its blur."""
    config = pretrained.load_config(name)
    sharp = data.builtin_samples("test", config.channels)[0]["image"][:192, :192]
    rng = np.random.default_rng(7)
    if name == "motion":
        kernel = kernels.motion(config.kernel_size, rng, length=0.6 * (config.kernel_size - 1))
    else:
        kernel = kernels.gaussian(config.kernel_size, 2.0)
    blurred = data.blur_host(sharp, kernel) + np.float32(1e-3) * rng.standard_normal(sharp.shape, np.float32)
    return sharp, blurred.astype(np.float32)


@pytest.mark.parametrize("name", pretrained.NAMES)
def test_shipped_model_restores_an_unseen_image(name):
    assert name in pretrained.available(), f"the package ships no {name!r} model"
    model = unroll.load(name)  # by name: no workdir, no network
    sharp, blurred = _unseen(name)
    def gain(m):  # aligned by the best integer shift: a blind method may translate (a warm start's kernel)
        return _aligned_psnr(m.deblur(blurred)[0], sharp) - _aligned_psnr(blurred, sharp)

    fresh = Model(model.config, *registry.build_split(model.config))  # same network, untrained
    gain, fresh_gain = gain(model), gain(fresh)
    assert gain > 0.25, gain
    if model.config.kernel_init == "uniform":  # a warm start gains from the classical estimate alone
        assert fresh_gain < 0.25, fresh_gain  # the threshold above is one random weights do not reach
    else:
        assert gain > fresh_gain, (gain, fresh_gain)  # training added to the pipeline's start
    card = (pretrained.ROOT / name / "MODEL_CARD.md").read_text()
    for needed in ("Training data", "Degradation", "Command", "Test scores"):
        assert needed in card, needed


def _photo_gains(noise: float, contrast: float = 1.0) -> dict[str, float]:
    """`aerial`'s PSNR gain on the built-in test photographs (160x160, contrast scaled about the
    mean by `contrast`, Gaussian blur sigma drawn in [1, 3], white noise of std `noise`), by name."""
    model = unroll.load("aerial")
    rng = np.random.default_rng(11)
    gains = {}
    for sample in data.builtin_samples("test", 3)[:3]:
        sharp = sample["image"][:160, :160]
        mean = sharp.mean(axis=(0, 1))
        sharp = (mean + np.float32(contrast) * (sharp - mean)).astype(np.float32)
        blurred = data.blur_host(sharp, kernels.gaussian(15, float(rng.uniform(1.0, 3.0))))
        blurred = (blurred + noise * rng.standard_normal(sharp.shape)).astype(np.float32)
        restored = np.clip(model.deblur(blurred)[0], 0, 1)
        gains[sample["name"]] = float(metrics.psnr(restored, sharp)[0]
                                      - metrics.psnr(np.clip(blurred, 0, 1), sharp)[0])
    return gains


@pytest.mark.parametrize("noise", [0.0, 0.01, 0.02])
def test_shipped_aerial_at_sensor_noise_levels(noise):
    """Issue 34: trained on noise std 0 to 0.025, `aerial` gains on unseen photographs at sensor
    noise levels (the AIRS(+) model trained at 1e-3 alone lost 5.7-12.6 dB on all three at 0.01 and
    0.02), the smooth, faint moon included (before the contrast fine-tune: -1.26 and -1.05 dB at
    0 and 0.01)."""
    gains = _photo_gains(noise)
    assert gains["chelsea.png"] > 1.0 and gains["coins.png"] > 1.0, gains
    assert gains["moon.png"] > 0.2, gains


@pytest.mark.parametrize("contrast", [0.5, 0.3])
def test_shipped_aerial_on_faint_photographs(contrast):
    """Photographs at half and a third of their contrast (haze, low sun): the model trained on
    ordinary contrast read faintness as blur; at 0.3 it ended below chelsea's input (-0.16 dB)."""
    gains = _photo_gains(0.0, contrast)
    assert gains["chelsea.png"] > 1.0 and gains["coins.png"] > 1.0, gains


@pytest.mark.xfail(strict=True, reason="known failure stated in aerial's model card: moon made fainter "
                                       "(std 0.035 or less, smooth), mildly blurred, ends below its input")
@pytest.mark.parametrize("contrast", [0.5, 0.3])
def test_shipped_aerial_known_failure_faint_moon(contrast):
    assert _photo_gains(0.0, contrast)["moon.png"] > 0.0


def test_cli_deblurs_and_evaluates_with_a_shipped_model(tmp_path):
    name = pretrained.available()[0]
    config = pretrained.load_config(name)
    image = tmp_path / "scene.png"
    data.save_image(image, _unseen(name)[1][:64, :80].clip(0, 1))
    out = tmp_path / "out"
    ok = _cli(f"--pretrained={name}", "--mode=deblur", f"--input={image}", f"--output_dir={out}")
    assert ok.returncode == 0, ok.stderr
    assert data.load_image(out / "scene_deblurred.png", config.channels).shape[:2] == (64, 80)
    (tmp_path / "test").mkdir()
    data.save_image(tmp_path / "test" / "a.png", _unseen(name)[0][:64, :64])
    evaluated = _cli(f"--pretrained={name}", "--mode=eval", f"--test_dir={tmp_path / 'test'}",
                     f"--workdir={tmp_path / 'ev'}")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["pretrained"] == name
    for args, expected in [(["--pretrained=satellite", "--mode=deblur", f"--input={image}"], "satellite"),
                           ([f"--pretrained={name}", "--mode=deblur", f"--input={image}", "--stages=9"],
                            "--stages=9"),
                           ([f"--pretrained={name}", "--mode=train"], "--pretrained")]:
        bad = _cli(*args, f"--output_dir={tmp_path / 'bad'}")
        assert bad.returncode == 2 and expected in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        assert not (tmp_path / "bad").exists()


def test_a_warm_started_models_card_describes_its_pipeline_and_further_scores():
    code = ("from experiments.export_pretrained import card\nfrom unroll.config import Config\n"
            "s = dict(psnr=26.0, ssim=0.6, rmse=12.0, psnr_input=24.0, ssim_input=0.5, rmse_input=16.0, "
            "kernel_mnc=0.8, num_images=3)\n"
            "warm = Config(steps=1, kernel_init='classical', image_init='nonblind', kernel_bank=1024, "
            "shake_prob=0.5, motion_prob=0.3)\n"
            "print(card('motion', warm, s, 'python -m ...', 60, 'CPU', scores='Levin: 30.00 dB'))\n"
            "print('=====')\nprint(card('motion', Config(steps=1), s, '', 0, 'CPU'))\n"
            "print('=====')\nprint(card('aerial', Config(steps=1, init_from='runs/base', contrast_min=0.25), "
            "s, '', 0, 'CPU'))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr  # a new interpreter: the entry point's flags would clash here
    text, paper, tuned = out.stdout.split("=====")
    assert "## Pipeline" in text and "bank of 1024 pairs" in text and "unroll.verdict" in text
    assert "## Further scores" in text and "Levin: 30.00 dB" in text
    assert "## Pipeline" not in paper
    assert "Fine-tuned" not in paper and "contrast" not in paper
    assert "Fine-tuned from earlier weights (`--init_from=runs/base`" in tuned and "drawn in [0.25, 1]" in tuned



def _aligned_psnr(image, sharp):
    """PSNR of the luminance, clipped, at the best integer shift within 5 px (blind methods may
    translate), 20 px in from the frame: the scoring of experiments.never_worse."""
    from unroll import levin
    from unroll.classical.layout import LUMA

    est = np.clip(np.asarray(image, np.float32).reshape(sharp.shape) @ LUMA, 0, 1)
    return levin.aligned_scores(est, sharp @ LUMA, crop=20, max_shift=5, step=1).psnr


def _camera_shake_photos(seed=3):
    """The built-in *test* photographs (never in training), 200x200 crops, blurred by camera-shake
    kernels (`kernels.shake`, 15-21 px), noise std 0.005, 8 bits."""
    rng = np.random.default_rng(seed)
    out = []
    for sample in data.builtin_samples("test", 3):
        sharp = sample["image"][:200, :200]
        h = kernels.shake(int(rng.choice([15, 17, 19, 21])), rng)
        g = data.blur_host(sharp, h) + np.float32(0.005) * rng.standard_normal(sharp.shape, np.float32)
        out.append((sharp, (np.round(np.clip(g, 0, 1) * 255) / 255).astype(np.float32)))
    return out


@pytest.mark.xfail(strict=True, reason="issue 29 not done: the shipped motion trails the classical solver "
                                       "with its fallback on coins and moon and ends 0.84 dB below moon's input")
def test_shipped_motion_beats_the_classical_solver_on_unseen_camera_shake():
    """On photographs it never trained on, blurred by camera shake: the shipped `motion` pipeline
    scores above the classical solver with its fallback (at the model's kernel size) on average,
    and no image ends more than 0.5 dB below its input."""
    from unroll import classical

    model = unroll.load("motion")
    k = model.config.kernel_size
    rows = []
    for sharp, g in _camera_shake_photos():
        u_classical, _ = classical.blind_deconvolve(g, k, fallback=True)
        rows.append((_aligned_psnr(g, sharp), _aligned_psnr(model.deblur(g)[0], sharp),
                     _aligned_psnr(u_classical, sharp)))
    blurred, network, solver = np.array(rows).T
    assert network.mean() > solver.mean(), rows
    assert (network > blurred - 0.5).all(), rows
