"""Checkpoints with orbax: the last `keep` saves under `DIR/checkpoints/latest`, the best under `best`.

A save holds the training state (parameters, optimiser state, step), the data iterator's state and
the configuration. Orbax writes each save to a temporary directory and renames it when complete, so a
run killed at any moment leaves the previous saves intact and a rerun resumes from the newest.
Nothing is created on disk before the first save.
"""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp

from unroll.config import Config


class CheckpointError(ValueError):
    """A checkpoint that does not fit this run (another configuration, or none where one is needed)."""


class Checkpoints:
    def __init__(self, workdir, keep: int = 3):
        self.root = Path(workdir).resolve() / "checkpoints"
        self.keep = keep
        self._managers: dict[str, ocp.CheckpointManager] = {}

    def _manager(self, which: str, create: bool = False) -> ocp.CheckpointManager | None:
        if which not in self._managers:
            path = self.root / which
            if not create and not path.is_dir():
                return None
            best = which == "best"
            options = ocp.CheckpointManagerOptions(
                max_to_keep=1 if best else self.keep,
                best_fn=(lambda metrics: metrics["psnr"]) if best else None,
                best_mode="max",
                keep_checkpoints_without_metrics=not best,
                enable_async_checkpointing=False,
                create=True,
            )
            self._managers[which] = ocp.CheckpointManager(
                path, options=options, item_names=("state", "data", "config"))
        return self._managers[which]

    def step(self, which: str = "latest") -> int | None:
        manager = self._manager(which)
        if manager is None:
            return None
        return manager.latest_step() if which == "latest" else manager.best_step()

    def saved_config(self, which: str = "latest") -> Config | None:
        step = self.step(which)
        if step is None:
            return None
        restored = self._manager(which).restore(
            step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        return Config.from_dict(restored["config"])

    def check_compatible(self, config: Config, which: str = "latest"):
        """Raise if the saved network differs from `config`'s (never overwrite another run's work)."""
        saved = self.saved_config(which)
        if saved is None:
            return
        theirs = saved.model_signature()
        diff = [f"--{k}={v!r} (checkpoint has {theirs.get(k)!r})"
                for k, v in config.model_signature().items() if theirs.get(k) != v]
        if diff:
            raise CheckpointError(f"{self.root} holds a checkpoint of another configuration: "
                                  + ", ".join(diff) + "; use another --workdir")

    def save(self, step: int, state, data_state, config: Config, metrics: dict | None = None):
        """Save to `latest`, and to `best` when evaluation `metrics` (with "psnr") are given."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  data=ocp.args.JsonSave(data_state or {}),
                                  config=ocp.args.JsonSave(config.to_dict()))
        latest = self._manager("latest", create=True)
        if latest.latest_step() != step:
            latest.save(step, args=args, force=True)
        best = self._manager("best", create=metrics is not None)
        if metrics is not None and best.latest_step() != step:
            best.save(step, args=args, metrics={"psnr": float(metrics["psnr"])}, force=True)

    def restore(self, state_template, which: str = "latest"):
        """(step, state, data_state) of the newest (or best) save, or None when there is none."""
        step = self.step(which)
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
        restored = self._manager(which).restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
        return step, restored["state"], restored["data"]

    def close(self):
        for manager in self._managers.values():
            manager.close()
        self._managers.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
