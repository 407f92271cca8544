"""experiments.compare: every model under one configuration, the Table VI markdown and the box-plots."""

import csv

import pytest

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


def test_compare_two_models_two_noise_levels(tmp_path):
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
    assert "noise 0.01: PSNR / SSIM / RMSE" in md
    for noise in (0.0, 0.01):
        assert (tmp_path / f"psnr_boxplot_noise={noise}.png").stat().st_size > 1000
