"""experiments.ablate: sweep parsing, variants, and a tiny stage sweep end to end (with resume)."""

import csv
import dataclasses

import pytest

from experiments import ablate
from unroll.config import Config, ConfigError

TINY = Config(stages=1, scales=1, kernel_rcabs=1, image_rcabs=1, features=4, kernel_features=4,
              kernel_size=5, patch_size=16, batch_size=2, steps=2, learning_rate=1e-3,
              final_lr_steps=1, eval_crop=24, log_every=1, save_every=2, num_samples=1)


def test_parse_sweeps_types_and_errors():
    sweeps = ablate.parse_sweeps(["stages", "threshold", "kernel_prox"], ["1,2,3", "gst,soft", "on,off"])
    assert sweeps == {"stages": [1, 2, 3], "threshold": ["gst", "soft"], "kernel_prox": [True, False]}
    for args, match in ((([], []), "--sweep is required"), ((["depth"], ["1"]), "--sweep=depth"),
                        ((["stages"], []), "--values"), ((["stages"], ["two"]), "not a int"),
                        ((["kernel_prox"], ["maybe"]), "true/false"),
                        ((["stages", "stages"], ["1", "2"]), "twice")):
        with pytest.raises(ConfigError, match=match):
            ablate.parse_sweeps(*args)


def test_variants_change_one_axis_and_are_validated():
    variants = ablate.make_variants(TINY, {"stages": [1, 2], "threshold": ["soft"]})
    assert [v[0] for v in variants] == ["stages=1", "stages=2", "threshold=soft"]
    for _, axis, value, config in variants:
        changed = {f.name for f in dataclasses.fields(Config)
                   if getattr(config, f.name) != getattr(TINY, f.name)}
        assert changed <= {axis}
        assert getattr(config, axis) == value
    with pytest.raises(ConfigError, match="--scales"):
        ablate.make_variants(TINY, {"scales": [4]})
    priors = ablate.make_variants(TINY, ablate.parse_sweeps(["image_prior"], ["paper,unet,haar_gst"]))
    assert [v[0] for v in priors] == ["image_prior=paper", "image_prior=unet", "image_prior=haar_gst"]
    with pytest.raises(ConfigError, match="--image_prior"):
        ablate.make_variants(TINY, {"image_prior": ["vit"]})


def test_tiny_stage_sweep_end_to_end_and_rerun_reuses(tmp_path, capsys):
    rows = ablate.ablate(TINY, {"stages": [1, 2]}, tmp_path, compile_stages=[])
    assert [r["variant"] for r in rows] == ["stages=1", "stages=2"]
    assert rows[1]["num_params"] > rows[0]["num_params"]
    for r in rows:
        assert r["step"] == 2 and 10 < r["psnr"] < 60
        assert 0 < r["s_kernel_mnc"] <= 1 + 1e-6 and 0 < r["h_kernel_mnc"] <= 1 + 1e-6
    with open(tmp_path / "ablation.csv") as f:
        table = list(csv.DictReader(f))
    assert [t["variant"] for t in table] == ["stages=1", "stages=2"]
    assert float(table[0]["psnr"]) == pytest.approx(rows[0]["psnr"])
    md = (tmp_path / "ablation.md").read_text()
    assert "Table V" in md and "s/||s||_1" in md
    assert (tmp_path / "convergence_stages.png").stat().st_size > 1000

    # stages=2's report cut short (a kill inside a write of an older version): unfinished work,
    # evaluated again from its final checkpoint with a note; stages=1 is reused.
    metrics = tmp_path / "stages=2" / "metrics.json"
    metrics.write_text(metrics.read_text()[:50])
    capsys.readouterr()
    again = ablate.ablate(TINY, {"stages": [1, 2]}, tmp_path, compile_stages=[])
    err = capsys.readouterr().err
    assert "stages=1: finished earlier" in err and "stages=2: finished earlier" not in err
    assert f"{metrics} cannot be read" in err
    assert [r["psnr"] for r in again] == pytest.approx([r["psnr"] for r in rows])
