"""The trainer end to end on tiny flags: outputs, resume after a kill, sharding, bad input."""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.common import config_from_flagfile
from unroll import checkpoint, train
from unroll.config import Config, ConfigError
from unroll.models import registry

ROOT = Path(__file__).resolve().parents[1]
TINY_FLAGS = ROOT / "experiments" / "flags" / "tiny.flags"


def tiny_config(**overrides) -> Config:
    """Config from tiny.flags (the same file the CLI tests use), read by absl's parser as the CLI reads it."""
    return dataclasses.replace(config_from_flagfile(TINY_FLAGS), **overrides)


def _params(workdir, config):
    with checkpoint.Checkpoints(workdir) as checkpoints:
        _, params, step = checkpoints.restore_model("latest")
    return step, jax.tree.leaves(params)


def test_train_end_to_end_writes_metrics_checkpoint_and_pictures(tmp_path):
    config = tiny_config()
    results = train.train_and_evaluate(config, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("psnr", "ssim", "rmse", "psnr_input", "ssim_input", "kernel_mnc", "num_params", "stages"):
        assert key in saved and saved[key] is not None, key
    assert saved["stages"] == config.stages and saved["num_params"] > 0
    assert saved == json.loads(json.dumps(results))
    assert 0 < saved["kernel_mnc"] <= 1 + 1e-6
    assert (tmp_path / "eval" / "per_image.csv").read_text().count("\n") == saved["num_images"] + 1
    assert list((tmp_path / "eval").glob("sample_*.png"))
    assert (tmp_path / "eval" / "psnr_boxplot.png").exists()
    assert (tmp_path / "training_curves.png").exists()
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == [2, 4, 6]
    step, _ = _params(tmp_path, config)
    assert step == config.steps


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, monkeypatch):
    config = tiny_config(num_samples=0)
    train.train_and_evaluate(config, tmp_path / "whole")

    # Kill the second run right after its first checkpoint (step 3), then rerun the same command.
    original = checkpoint.Checkpoints.save

    def save_then_die(self, step, *args, **kwargs):
        original(self, step, *args, **kwargs)
        if step == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.Checkpoints, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(config, tmp_path / "killed")
    monkeypatch.setattr(checkpoint.Checkpoints, "save", original)
    assert _params(tmp_path / "killed", config)[0] == 3
    # As if killed later: a line of a step after the checkpoint, then a line cut short mid-write.
    log = tmp_path / "killed" / "log.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["step"] for e in entries] == [2] and 0 < entries[0]["train_seconds"] < 1000
    entries[0]["train_seconds"] = 1000.0  # as if the killed run had trained for 1000 s
    log.write_text("".join(json.dumps(e) + "\n" for e in entries))
    with open(log, "a") as f:
        f.write('{"step": 4, "loss": 99.0}\n{"step": 5, "lo')
    train.train_and_evaluate(config, tmp_path / "killed")
    # Training time adds up over the runs of the command.
    seconds = [e["train_seconds"] for e in map(json.loads, log.read_text().splitlines())
               if "train_seconds" in e]
    assert seconds[0] == 1000.0 and seconds == sorted(seconds) and len(seconds) == 3
    whole, killed = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("whole", "killed"))
    assert 0 < whole["train_seconds"] < 1000 < killed["train_seconds"] < 1000 + 600
    logged = [json.loads(line)["step"] for line in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    assert logged == [json.loads(line)["step"] for line in (tmp_path / "whole" / "log.jsonl").read_text().splitlines()]

    step_a, params_a = _params(tmp_path / "whole", config)
    step_b, params_b = _params(tmp_path / "killed", config)
    assert step_a == step_b == config.steps
    for a, b in zip(params_a, params_b):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    losses = lambda d: [e["loss"] for e in map(json.loads, (d / "log.jsonl").read_text().splitlines())
                        if "loss" in e and e["step"] > 3]
    assert losses(tmp_path / "whole") == losses(tmp_path / "killed")


def test_sharded_step_matches_single_device_step():
    assert jax.device_count() >= 2, "conftest.py simulates 2 CPU devices"
    config = tiny_config()
    from benchmarks.train_step import synthetic_batch

    batch = synthetic_batch(config, seed=3)
    results = []
    for devices in (jax.devices()[:1], jax.devices()[:2]):
        mesh = train.make_mesh(devices)
        graphdef, params = registry.build_split(config)
        tx, _ = train.make_optimizer(config, 10, 8)
        state = train.init_state(params, tx, mesh)
        step = train.make_train_step(graphdef, config, tx, mesh)
        global_batch = train.global_batch(batch, mesh)
        assert len(global_batch["blurred"].sharding.device_set) == len(devices)
        state, metrics = step(state, global_batch)
        results.append((float(metrics["loss"]), jax.tree.leaves(state["params"])))
    (loss_1, params_1), (loss_2, params_2) = results
    np.testing.assert_allclose(loss_1, loss_2, rtol=1e-5)
    for a, b in zip(params_1, params_2):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_config_validation_names_the_flag():
    with pytest.raises(ConfigError, match="--stages"):
        tiny_config(stages=0).validate()
    with pytest.raises(ConfigError, match="--patch_size"):
        tiny_config(patch_size=30, scales=3).validate()
    with pytest.raises(ConfigError, match="--steps"):
        tiny_config(steps=5, epochs=2).validate()
    for flag in ("sigma_max", "noise", "alpha", "final_learning_rate"):
        with pytest.raises(ConfigError, match=f"--{flag}=inf: must be a finite number"):
            tiny_config(**{flag: float("inf")}).validate()
    with pytest.raises(ConfigError, match="--gst_grad"):
        tiny_config(gst_grad="fd").validate()
    with pytest.raises(ConfigError, match="--gst_solver"):
        tiny_config(gst_solver="bisection").validate()
    with pytest.raises(ConfigError, match="--stage_unroll=-1"):
        tiny_config(stage_unroll=-1).validate()
    with pytest.raises(ConfigError, match="--stage_unroll=0: must be 1 with --remat"):
        tiny_config(stage_unroll=0, remat=True).validate()


def _cli(*args, cwd=ROOT):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "experiments.mgstnet", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cli_bad_inputs_fail_with_one_line_and_touch_nothing(tmp_path):
    from unroll import data

    (tmp_path / "test").mkdir()
    data.save_image(tmp_path / "test" / "good.png", np.random.default_rng(0).random((40, 40, 3)))
    data.save_image(tmp_path / "test" / "cut.png", np.random.default_rng(1).random((40, 40, 3)))
    whole = (tmp_path / "test" / "cut.png").read_bytes()
    (tmp_path / "test" / "cut.png").write_bytes(whole[:len(whole) // 2])  # header intact, pixels cut
    cases = [
        ([f"--test_dir={tmp_path / 'test'}"], "cut.png"),  # found before any training step
        (["--no_such_flag=1"], "no_such_flag"),
        (["--stages=0"], "--stages"),
        ([f"--train_dir={tmp_path / 'missing'}"], "missing"),
        (["--mode=eval"], "checkpoint in"),
    ]
    for extra, expected in cases:
        result = _cli(f"--flagfile={TINY_FLAGS}", f"--workdir={tmp_path / 'run'}", *extra)
        assert result.returncode != 0, extra
        assert "Traceback" not in result.stderr, result.stderr
        assert expected in result.stderr, (extra, result.stderr)


def test_cli_trains_then_refuses_another_configuration(tmp_path):
    workdir = tmp_path / "run"
    ok = _cli(f"--flagfile={TINY_FLAGS}", f"--workdir={workdir}", "--steps=2", "--save_every=2")
    assert ok.returncode == 0, ok.stderr
    assert "PSNR" in ok.stdout
    ok_metrics = (workdir / "metrics.json").read_text()
    before = _snapshot(workdir)
    other = _cli(f"--flagfile={TINY_FLAGS}", f"--workdir={workdir}", "--steps=2", "--stages=3")
    assert other.returncode != 0
    assert "Traceback" not in other.stderr and "--stages=3" in other.stderr, other.stderr
    assert _snapshot(workdir) == before

    # Deblur mode on a user image with the workdir alone (the checkpoint holds the configuration);
    # a second run keeps the complete outputs (nothing left to do); a flag contradicting the
    # checkpoint is refused.
    from unroll import data
    image = tmp_path / "photo.png"
    data.save_image(image, np.random.default_rng(0).random((41, 37, 3)))
    out = tmp_path / "out"
    first = _cli(f"--workdir={workdir}", "--mode=deblur", f"--input={image}", f"--output_dir={out}")
    assert first.returncode == 0, first.stderr
    deblurred = data.load_image(out / "photo_deblurred.png")
    assert deblurred.shape == (41, 37, 3)
    assert (out / "photo_kernel.png").exists()
    again = _cli(f"--flagfile={TINY_FLAGS}", f"--workdir={workdir}", "--mode=deblur",
                 f"--input={image}", f"--output_dir={out}")
    assert again.returncode == 0 and "1 of 1 input(s) already have complete outputs" in again.stderr
    assert data.load_image(out / "photo_deblurred.png").shape == (41, 37, 3)
    mismatch = _cli(f"--workdir={workdir}", "--mode=deblur", f"--input={image}", "--stages=3",
                    f"--output_dir={tmp_path / 'mismatch'}")
    assert mismatch.returncode == 2 and "--stages=3" in mismatch.stderr, mismatch.stderr
    assert "Traceback" not in mismatch.stderr and not (tmp_path / "mismatch").exists()
    evaluated = _cli(f"--workdir={workdir}", "--mode=eval")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads((workdir / "metrics.json").read_text())["psnr"] == pytest.approx(
        json.loads(ok_metrics)["psnr"], abs=1e-4)

    # Tiled (each 32x32 tile estimates its kernel); a bad tile flag is a one-line error.
    tiled = _cli(f"--flagfile={TINY_FLAGS}", f"--workdir={workdir}", "--mode=deblur", f"--input={image}",
                 f"--output_dir={tmp_path / 'tiled'}", "--tile_size=32", "--tile_overlap=8")
    assert tiled.returncode == 0, tiled.stderr
    assert data.load_image(tmp_path / "tiled" / "photo_deblurred.png").shape == (41, 37, 3)
    bad = _cli(f"--flagfile={TINY_FLAGS}", f"--workdir={workdir}", "--mode=deblur", f"--input={image}",
               f"--output_dir={tmp_path / 'bad'}", "--tile_size=32", "--tile_overlap=40")
    assert bad.returncode != 0 and "--tile_overlap" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_multiband_tiffs_train_evaluate_and_deblur(tmp_path):
    """A model built for C = 4 bands trains on 4-band 16-bit TIFFs and deblurs one into a 4-band TIFF."""
    import tifffile

    import unroll
    from unroll.inference import deblur

    rng = np.random.default_rng(0)
    for folder, count in (("train", 3), ("test", 2)):
        (tmp_path / folder).mkdir()
        for i in range(count):
            smooth = np.cumsum(np.cumsum(rng.random((64, 64, 4)), 0), 1)
            pixels = (smooth / smooth.max() * 60000).astype(np.uint16)
            tifffile.imwrite(tmp_path / folder / f"scene{i}.tif", pixels, photometric="minisblack",
                             planarconfig="contig")
    config = tiny_config(channels=4, train_dir=str(tmp_path / "train"), test_dir=str(tmp_path / "test"),
                         steps=2, save_every=2, batch_size=2)
    results = train.train_and_evaluate(config, tmp_path / "run")
    assert np.isfinite(results["psnr"]) and results["num_images"] == 2
    written = deblur.deblur_files(unroll.load(tmp_path / "run"), [tmp_path / "test" / "scene0.tif"],
                                  tmp_path / "out")
    out = tifffile.imread(written[0])
    assert out.shape == (64, 64, 4) and out.dtype == np.uint16


def test_checkpoint_of_per_stage_layout_restores_stacked(tmp_path):
    """Checkpoints written when every MGSTNet stage was its own module (`stages/<k>/...`) restore
    into today's stacked parameters; another network is refused in one line."""
    from flax import nnx

    config = tiny_config(stages=2, scales=1, kernel_rcabs=0, image_rcabs=0, features=4)
    graphdef, params = registry.build_split(config)
    model = nnx.merge(graphdef, params)
    old_params = nnx.State({"stages": nnx.State(
        {k: nnx.split(model.stage(k))[1] for k in range(2)})})
    tx, _ = train.make_optimizer(config, 10, 10)

    def one_update(p):  # non-zero Adam moments, elementwise: per stage or stacked alike
        updates, opt_state = tx.update(jax.tree.map(jnp.sin, p), tx.init(p), p)
        return {"params": p, "opt_state": opt_state, "step": jnp.asarray(3, jnp.int32)}

    with checkpoint.Checkpoints(tmp_path) as ckpt:
        ckpt.save(3, one_update(old_params), {"next_index": 12}, config)
        expected = one_update(params)
        step, state, data_state = ckpt.restore(jax.tree.map(jnp.zeros_like, expected))
    assert step == 3 and data_state == {"next_index": 12}
    assert jax.tree.structure(state) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(a, b)
    with checkpoint.Checkpoints(tmp_path) as ckpt:  # the parameters alone, no optimiser built
        _, model_params, model_step = ckpt.restore_model("latest")
    assert model_step == 3 and jax.tree.structure(model_params) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(model_params), jax.tree.leaves(expected["params"])):
        np.testing.assert_array_equal(a, b)

    other = one_update(registry.build_split(dataclasses.replace(config, features=8))[1])
    with checkpoint.Checkpoints(tmp_path) as ckpt, pytest.raises(checkpoint.CheckpointError) as e:
        ckpt.restore(other)
    assert "does not fit this network" in str(e.value) and "\n" not in str(e.value)


def test_init_from_fine_tunes_from_another_runs_weights_and_refuses_another_network(tmp_path):
    base = tiny_config(num_samples=0, steps=3)
    train.train_and_evaluate(base, tmp_path / "a")
    _, trained = _params(tmp_path / "a", base)
    # One step at a negligible learning rate: the result is the starting point.
    still = dataclasses.replace(base, steps=1, learning_rate=1e-12, final_learning_rate=1e-12)
    train.train_and_evaluate(dataclasses.replace(still, init_from=str(tmp_path / "a")), tmp_path / "b")
    train.train_and_evaluate(still, tmp_path / "c")
    (_, tuned), (_, fresh) = _params(tmp_path / "b", base), _params(tmp_path / "c", base)
    assert max(float(jnp.abs(t - a).max()) for t, a in zip(tuned, trained)) < 1e-6
    assert max(float(jnp.abs(f - a).max()) for f, a in zip(fresh, trained)) > 1e-3  # not the default init
    with pytest.raises(ConfigError, match="--init_from=.*stages=2.*same network"):
        train.train_and_evaluate(dataclasses.replace(base, stages=3, init_from=str(tmp_path / "a")),
                                 tmp_path / "d")
    with pytest.raises(ConfigError, match="--init_from=.*nosuch"):
        train.train_and_evaluate(dataclasses.replace(base, init_from=str(tmp_path / "nosuch")),
                                 tmp_path / "e")
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()
