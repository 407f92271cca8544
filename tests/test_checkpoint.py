"""Checkpoints survive damage: every kind of broken newest save falls back to the previous one, a
flipped byte is caught by the checksum, and a failed save is one line that leaves earlier saves."""

import errno
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unroll import checkpoint
from unroll.config import Config
from unroll.models import registry
from unroll.train import state as train_state

CONFIG = Config(stages=2, scales=1, kernel_rcabs=0, image_rcabs=0, features=4, kernel_features=4,
                kernel_size=5, steps=10, patch_size=16)


def _state(step: int):
    """A distinct state per step: parameters shifted by the step."""
    _, params = registry.build_split(CONFIG)
    tx, _ = train_state.make_optimizer(CONFIG, 10, 10)
    params = jax.tree.map(lambda x: x + step, params)
    return dict(train_state.init_state(params, tx), step=jnp.asarray(step, jnp.int32))


@pytest.fixture
def workdir(tmp_path):
    with checkpoint.Checkpoints(tmp_path) as ckpt:
        for step in (1, 2, 3):
            ckpt.save(step, _state(step), {"next_index": step}, CONFIG)
    return tmp_path


def _step_dir(workdir: Path, step: int) -> Path:
    return workdir / "checkpoints" / "latest" / str(step)


def _array_files(workdir: Path, step: int) -> list[Path]:
    """The files holding the arrays' bytes (orbax's OCDBT data files, `d/<hash>`)."""
    return sorted(p for p in (_step_dir(workdir, step) / "state").rglob("*")
                  if p.is_file() and p.parent.name == "d")


def _truncate(workdir):
    for path in _array_files(workdir, 3):
        path.write_bytes(path.read_bytes()[:40])


def _flip_byte(workdir):
    for path in _array_files(workdir, 3):
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        path.write_bytes(bytes(raw))


def _drop_ocdbt(workdir):
    import shutil

    for folder in [*(_step_dir(workdir, 3) / "state").glob("ocdbt.process_*"),
                   _step_dir(workdir, 3) / "state" / "d"]:
        shutil.rmtree(folder, ignore_errors=True)


def _silent_corruption(workdir):
    """Arrays that decode without error but differ from what was saved: the checksum's case. (Here
    the stored checksum is changed instead, which the arrays then fail to match.)"""
    path = _step_dir(workdir, 3) / "checksum" / "metadata"
    path.write_text(path.read_text().replace('"params": "', '"params": "0', 1))


def _drop_state_item(workdir):
    import shutil

    shutil.rmtree(_step_dir(workdir, 3) / "state")


def _garbage_config(workdir):
    (_step_dir(workdir, 3) / "config" / "metadata").write_text("{not json")


def _empty_metadata(workdir):
    (_step_dir(workdir, 3) / "state" / "_METADATA").write_text("")


@pytest.mark.parametrize("damage", [_truncate, _flip_byte, _silent_corruption, _drop_ocdbt, _drop_state_item,
                                    _garbage_config, _empty_metadata])
def test_damaged_newest_save_falls_back_to_the_previous_one(workdir, damage, capsys):
    damage(workdir)
    with checkpoint.Checkpoints(workdir) as ckpt:
        assert ckpt.saved_config() == CONFIG
        step, state, data = ckpt.restore(jax.tree.map(jnp.zeros_like, _state(0)))
        _, params, model_step = ckpt.restore_model()
    assert step == 2 and data == {"next_index": 2} and model_step == 2
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(_state(2))):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(_state(2)["params"])):
        np.testing.assert_array_equal(got, want)
    notes = [line for line in capsys.readouterr().err.splitlines() if "cannot be restored" in line]
    assert notes and all("latest/3" in line for line in notes)
    # Training resumes from step 2: the damaged step 3 is moved aside and step 3 can be saved again.
    assert not _step_dir(workdir, 3).exists()
    assert (workdir / "checkpoints" / "damaged" / "latest-3").is_dir()
    with checkpoint.Checkpoints(workdir) as ckpt:
        ckpt.save(3, _state(3), {"next_index": 3}, CONFIG)
        assert ckpt.restore(_state(0))[0] == 3


def test_every_save_damaged_is_one_error(workdir):
    for step in (1, 2, 3):
        (_step_dir(workdir, step) / "state" / "_METADATA").write_text("")
    with checkpoint.Checkpoints(workdir) as ckpt, pytest.raises(checkpoint.CheckpointError) as err:
        ckpt.restore(_state(0))
    assert "can be restored" in str(err.value) and "\n" not in str(err.value)


def test_another_network_is_refused_not_taken_for_damage(workdir):
    other = Config(**{**CONFIG.to_dict(), "features": 8})
    _, params = registry.build_split(other)
    tx, _ = train_state.make_optimizer(other, 10, 10)
    with checkpoint.Checkpoints(workdir) as ckpt, pytest.raises(checkpoint.CheckpointError) as err:
        ckpt.restore(train_state.init_state(params, tx))
    assert "does not fit this network" in str(err.value) and "\n" not in str(err.value)
    assert _step_dir(workdir, 3).exists()  # nothing moved: the checkpoints are fine


def test_a_failed_save_is_one_line_and_keeps_the_earlier_saves(workdir, monkeypatch):
    import orbax.checkpoint as ocp

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    with checkpoint.Checkpoints(workdir) as ckpt, pytest.raises(checkpoint.CheckpointSaveError) as err:
        ckpt.save(4, _state(4), {"next_index": 4}, CONFIG)
    message = str(err.value)
    assert "No space left on device" in message and "free there" in message and "\n" not in message
    monkeypatch.undo()
    with checkpoint.Checkpoints(workdir) as ckpt:
        assert ckpt.restore(_state(0))[0] == 3


def test_checksum_changes_with_any_leaf():
    state = _state(1)
    flipped = jax.tree.map(lambda x: x, state)
    leaf = jax.tree.leaves(flipped["params"])[0]
    changed = jax.tree.map(lambda x: x.at[(0,) * x.ndim].add(1e-6) if x is leaf else x, flipped["params"])
    assert checkpoint.checksum(state["params"]) != checkpoint.checksum(changed)
    assert checkpoint.checksum(state["params"]) == checkpoint.checksum(_state(1)["params"])


def test_a_checkpoint_fits_only_the_same_boundary(workdir):
    other = Config(**{**CONFIG.to_dict(), "boundary": "circular"})
    with checkpoint.Checkpoints(workdir) as ckpt, pytest.raises(checkpoint.CheckpointError, match="--boundary"):
        ckpt.check_compatible(other)
    with checkpoint.Checkpoints(workdir) as ckpt:  # settings that do not change the output may differ
        ckpt.check_compatible(Config(**{**CONFIG.to_dict(), "gst_grad": "implicit", "remat": True}))


def test_training_curves_read_interval_means_and_skip_a_cut_line(tmp_path):
    from unroll import plots

    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 2, "loss": 0.5, "loss_mean": 0.6}\n{"step": 4, "loss": 0.3, "loss_mean": 0.4}\n'
                   '{"step": 4, "eval_psnr": 30.0, "eval_psnr_input": 28.0}\n{"step": 6, "lo')
    series = plots.read_log(log)
    assert series["loss_mean"] == {2: 0.6, 4: 0.4} and series["eval_psnr_input"] == {4: 28.0}
    plots.training_curves(log, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
