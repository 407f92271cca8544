"""Checkpoints with orbax: the last `keep` saves under `DIR/checkpoints/latest`, the best under `best`.

A save holds the training state (parameters, optimiser state, step), the data iterator's state and
the configuration. Orbax writes each save to a temporary directory and renames it when complete, so a
run killed at any moment leaves the previous saves intact and a rerun resumes from the newest.
Nothing is created on disk before the first save.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx

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
        """(step, state, data_state) of the newest (or best) save, or None when there is none.

        Checkpoints of MGSTNet written before its stages were stored stacked (one entry per stage,
        `stages/0/...`) are read too, and stacked on the way in.
        """
        step = self.step(which)
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
        try:
            state, data = self._restore(which, step, abstract)
        except ValueError as error:
            try:
                state, data = self._restore(which, step, _per_stage(abstract))
            except (ValueError, _NoStages):
                raise CheckpointError(
                    f"{self.root / which} step {step} does not fit this network (another parameter "
                    f"layout): {str(error).splitlines()[0]}") from None
            state = _stacked(state)
        return step, state, data

    def _restore(self, which, step, abstract):
        restored = self._manager(which).restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
        return restored["state"], restored["data"]

    def close(self):
        for manager in self._managers.values():
            manager.close()
        self._managers.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# MGSTNet's stage parameters: stacked on a leading axis now (`stages/<leaf>[K, ...]`), one entry per
# stage in older checkpoints (`stages/<k>/<leaf>`). The optimiser state holds the same trees.


class _NoStages(Exception):
    pass


def _is_state(x) -> bool:
    return isinstance(x, nnx.State)


def _map_stages(tree, fn):
    """`fn` applied to the `stages` entry of every nnx.State in `tree`; _NoStages when none has one."""
    found = []

    def fix(node):
        if not _is_state(node) or "stages" not in node:
            return node
        found.append(True)
        node = nnx.State(dict(node))
        node["stages"] = fn(node["stages"])
        return node

    out = jax.tree.map(fix, tree, is_leaf=_is_state)
    if not found:
        raise _NoStages
    return out


def _per_stage(abstract):
    """The old layout of an abstract state: {k: stage k's leaves} in place of the stacked leaves."""
    def split(stages):
        k = jax.tree.leaves(stages)[0].shape[0]
        return nnx.State({i: jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype, sharding=x.sharding), stages)
            for i in range(k)})
    return _map_stages(abstract, split)


def _stacked(state):
    """The stacked layout of a state restored in the old one."""
    def stack(stages):
        return jax.tree.map(lambda *xs: jnp.stack(xs), *(stages[i] for i in sorted(stages)))
    return _map_stages(state, stack)
