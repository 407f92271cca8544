"""experiments.compare: every model under one configuration, the Table VI markdown and the box-plots."""

import csv

import numpy as np
import pytest
from scipy import ndimage

from experiments import compare
from unroll.config import Config, ConfigError

TINY = Config(stages=1, scales=1, kernel_rcabs=1, image_rcabs=1, features=4, kernel_features=4,
              kernel_size=5, patch_size=16, batch_size=2, steps=1, learning_rate=1e-3,
              eval_crop=24, log_every=1, save_every=1, num_samples=0)


def test_runs_share_everything_but_the_model():
    runs = compare.make_runs(TINY, ["mgstnet", "idc"], [0.0, 0.01], baseline_features=6)
    assert [(m, n) for m, n, _ in runs] == [("mgstnet", 0.0), ("idc", 0.0), ("mgstnet", 0.01),
                                            ("idc", 0.01)]
    assert runs[0][2].features == 4 and runs[1][2].features == 6
    assert {c.seed for *_, c in runs} == {0} and {c.steps for *_, c in runs} == {1}
    with pytest.raises(ConfigError, match="--models"):
        compare.make_runs(TINY, ["unet"], [0.0])


def test_compare_two_models_two_noise_levels(tmp_path, capsys):
    rows = compare.compare(TINY, ["mgstnet", "mtwdn"], [0.0, 0.01], tmp_path)
    assert [(r["model"], r["noise"]) for r in rows] == [("mgstnet", 0.0), ("mtwdn", 0.0),
                                                         ("mgstnet", 0.01), ("mtwdn", 0.01)]
    with open(tmp_path / "compare.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and table[0]["interpretable"] == "True" and table[1]["estimates_kernel"] == "False"
    # Noise lowers the input's quality; both noise levels see the same test images.
    assert rows[2]["psnr_input"] < rows[0]["psnr_input"]
    md = (tmp_path / "compare.md").read_text()
    assert "| mgstnet | yes | yes |" in md and "| mtwdn | no | no |" in md
    assert f"| {TINY.learning_rate:g} |" in md  # the lr column
    assert "noise 0.01: PSNR / SSIM / RMSE" in md
    for noise in (0.0, 0.01):
        assert (tmp_path / f"psnr_boxplot_noise={noise}.png").stat().st_size > 1000

    # A run's per-image table cut short (a kill inside a write of an older version) is unfinished
    # work: that run is evaluated again with a note, the others are reused.
    table = tmp_path / "mtwdn" / "noise=0.0" / "eval" / "per_image.csv"
    table.write_text(table.read_text()[:-10])
    again = compare.compare(TINY, ["mgstnet", "mtwdn"], [0.0, 0.01], tmp_path)
    err = capsys.readouterr().err
    assert f"{table} cannot be read" in err and err.count("finished earlier") == 3
    assert [r["psnr"] for r in again] == pytest.approx([r["psnr"] for r in rows])


def test_model_steps_give_a_model_its_own_budget():
    base = TINY.__class__(**{**TINY.to_dict(), "steps": 400, "final_lr_steps": 100})
    runs = compare.make_runs(base, ["mgstnet", "madn"], [0.0],
                             model_steps=compare.parse_model_steps(["madn:200"]))
    assert [(c.steps, c.final_lr_steps) for *_, c in runs] == [(400, 100), (200, 50)]
    for bad in (["madn"], ["madn:x"], ["unet:5"], ["madn:0"]):
        with pytest.raises(ConfigError, match="--model_steps"):
            compare.parse_model_steps(bad)


def test_model_learning_rates_give_a_model_its_own_rate():
    base = TINY.__class__(**{**TINY.to_dict(), "learning_rate": 1e-3, "final_learning_rate": 1e-4})
    runs = compare.make_runs(base, ["mgstnet", "madn"], [0.0],
                             model_learning_rates=compare.parse_model_learning_rates(["madn:2e-4"]))
    assert [(c.learning_rate, c.final_learning_rate) for *_, c in runs] == [(1e-3, 1e-4),
                                                                             (2e-4, pytest.approx(2e-5))]
    for bad in (["madn"], ["madn:fast"], ["unet:1e-4"], ["madn:0"], ["madn:-1e-4"], ["madn:nan"], ["madn:inf"]):
        with pytest.raises(ConfigError, match="--model_learning_rates"):
            compare.parse_model_learning_rates(bad)


def test_classical_row_and_per_class_table(tmp_path):
    from unroll import data

    rng = np.random.default_rng(0)
    for cls in ("field", "forest"):
        (tmp_path / "test" / cls).mkdir(parents=True)
        for i in range(2):
            data.save_image(tmp_path / "test" / cls / f"{i}.png",
                            ndimage.gaussian_filter(rng.random((32, 32, 3)), (1, 1, 0)))
    base = TINY.__class__(**{**TINY.to_dict(), "test_dir": str(tmp_path / "test"), "eval_crop": 0})
    rows = compare.compare(base, ["classical", "idc"], [0.0], tmp_path / "out")
    classical = rows[0]
    assert classical["model"] == "classical" and classical["num_images"] == 4
    assert 0 < classical["kernel_mnc"] <= 1 + 1e-6 and np.isfinite(classical["psnr"])
    assert rows[1]["psnr_input"] == pytest.approx(classical["psnr_input"])  # the same test images
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "| classical | yes | yes | - |" in md
    assert "| model | field | forest |" in md and md.count("| idc |") == 2
    again = compare.classical_run(base, tmp_path / "out" / "classical" / "noise=0.0")  # reused
    assert again["psnr"] == classical["psnr"]
