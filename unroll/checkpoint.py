"""Checkpoints with orbax: the last `keep` saves under `DIR/checkpoints/latest`, the best under `best`.

A save holds the training state (parameters, optimiser state, step), the data iterator's state, the
configuration and a checksum (SHA-256) of the parameters and of the optimiser state. Orbax writes each
save to a temporary directory and renames it when complete, so a run killed at any moment leaves the
previous saves intact and a rerun resumes from the newest. Nothing is created on disk before the
first save.

Damage never needs a user's hands: a save that cannot be read (truncated or missing files,
unreadable metadata or configuration, a missing item) or whose arrays do not match their checksum is
reported on one line and the next older save is used; when training resumes from an older save, the
damaged newer ones are moved to `DIR/checkpoints/damaged/` (kept for inspection, out of the way).
A save that fails (a full disk, an I/O error) raises `CheckpointSaveError` on one line; the saves
before it stay loadable.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from unroll.atomic import free_space
from unroll.config import Config

ITEMS = ("state", "data", "config", "checksum")


class CheckpointError(ValueError):
    """A checkpoint that does not fit this run (another configuration, or none where one is needed)."""


class CheckpointSaveError(RuntimeError):
    """A save failed for a reason of the machine (a full disk, an I/O error); earlier saves are intact."""


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _leaf_bytes(x) -> bytes:
    if isinstance(x, jax.Array):
        x = x.addressable_data(0)  # replicated: this process's copy
    x = np.asarray(x)
    return f"{x.dtype}{x.shape}".encode() + np.ascontiguousarray(x).tobytes()


def checksum(tree) -> str:
    """SHA-256 of every leaf of `tree` (dtype, shape and bytes, in the tree's leaf order)."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        digest.update(_leaf_bytes(leaf))
    return digest.hexdigest()


def state_checksums(state) -> dict:
    return {key: checksum(state[key]) for key in ("params", "opt_state") if key in state}


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
            self._managers[which] = ocp.CheckpointManager(path, options=options, item_names=ITEMS)
        return self._managers[which]

    def steps(self, which: str = "latest") -> list[int]:
        """The saved steps, the one to try first first (newest; for "best", the best)."""
        manager = self._manager(which)
        if manager is None:
            return []
        steps = sorted(manager.all_steps(), reverse=True)
        if which == "best" and manager.best_step() in steps:
            steps.remove(manager.best_step())
            steps.insert(0, manager.best_step())
        return steps

    def step(self, which: str = "latest") -> int | None:
        steps = self.steps(which)
        return steps[0] if steps else None

    def _note(self, which: str, step: int, reason: str):
        print(f"note: checkpoint {self.root / which / str(step)} cannot be restored ({reason}); "
              "trying the previous one", file=sys.stderr)

    def _config_at(self, which: str, step: int) -> Config:
        restored = self._manager(which).restore(
            step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        if not isinstance(restored["config"], dict):
            raise ValueError("the stored configuration is not a JSON object")
        return Config.from_dict(restored["config"])

    def _first_readable(self, which: str, read):
        """(step, read(step)) for the newest step that `read` manages, noting each damaged one; None
        when there is no save; CheckpointError when none can be read."""
        steps = self.steps(which)
        reasons = []
        for step in steps:
            try:
                return step, read(step)
            except CheckpointError:
                raise
            except Exception as exc:  # orbax and tensorstore raise many kinds on damaged files
                reasons.append(f"step {step}: {_first_line(exc)}")
                self._note(which, step, _first_line(exc))
        if not steps:
            return None
        raise CheckpointError(f"no checkpoint in {self.root / which} can be restored ("
                              + "; ".join(reasons) + "); use another --workdir or delete it")

    def saved_config(self, which: str = "latest") -> Config | None:
        found = self._first_readable(which, lambda step: self._config_at(which, step))
        return None if found is None else found[1]

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
                                  config=ocp.args.JsonSave(config.to_dict()),
                                  checksum=ocp.args.JsonSave(state_checksums(state)))
        try:
            with _quiet_orbax():
                latest = self._manager("latest", create=True)
                if latest.latest_step() != step:
                    latest.save(step, args=args, force=True)
                best = self._manager("best", create=metrics is not None)
                if metrics is not None and best.latest_step() != step:
                    best.save(step, args=args, metrics={"psnr": float(metrics["psnr"])}, force=True)
        except Exception as exc:
            raise CheckpointSaveError(
                f"cannot save checkpoint step {step} in {self.root} ({_first_line(exc)}; "
                f"{free_space(self.root)} free there); the earlier checkpoints are intact") from None

    def _verified(self, which: str, step: int, tree: dict, keys):
        """Raise ValueError when a restored part of the state does not match its stored checksum
        (saves from before checksums were kept have none to check)."""
        if not (self.root / which / str(step) / "checksum").exists():
            return
        stored = self._manager(which).restore(
            step, args=ocp.args.Composite(checksum=ocp.args.JsonRestore()))["checksum"]
        for key in keys:
            if key in stored and checksum(tree[key]) != stored[key]:
                raise ValueError(f"the {key} do not match their checksum (a damaged file)")

    def restore(self, state_template, which: str = "latest"):
        """(step, state, data_state) of the newest (or best) save that restores, or None when there
        is none. Damaged newer saves of `latest` are moved to `checkpoints/damaged/`.

        Checkpoints of MGSTNet written before its stages were stored stacked (one entry per stage,
        `stages/0/...`) are read too, and stacked on the way in.
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)

        def read(step):
            self._config_at(which, step)  # an unreadable configuration is damage too
            layout = self._layout(which, step, abstract)
            state, data = self._restore(which, step, layout)
            self._verified(which, step, state, ("params", "opt_state"))
            return (state if layout is abstract else _stacked(state)), data

        newest = self.step(which)
        found = self._first_readable(which, read)
        if found is None:
            return None
        step, (state, data) = found
        if which == "latest" and step != newest and jax.process_index() == 0:  # one process moves
            self._set_aside_newer(which, step)
        return step, state, data

    def _layout(self, which: str, step: int, abstract, partial: bool = False):
        """`abstract` if the save holds its leaves with their shapes (all of them, or with `partial`
        at least them), else the per-stage layout of older MGSTNet saves if that fits; otherwise a
        CheckpointError. Unreadable metadata raises as damage."""
        metadata = ocp.StandardCheckpointHandler().metadata(self.root / which / str(step) / "state")
        saved = {m.name: tuple(m.shape) for m in jax.tree.leaves(metadata)}

        def fits(tree):
            wanted = _shapes(tree)
            return all(saved.get(k) == v for k, v in wanted.items()) and (partial or len(saved) == len(wanted))

        if fits(abstract):
            return abstract
        try:
            old = _per_stage(abstract)
        except _NoStages:
            old = None
        if old is not None and fits(old):
            return old
        wanted = _shapes(abstract)
        first = next((f"{k}: saved {saved.get(k)}, this network {v}" for k, v in wanted.items()
                      if saved.get(k) != v), f"{len(saved)} saved arrays, {len(wanted)} here")
        raise CheckpointError(f"{self.root / which} step {step} does not fit this network (another "
                              f"parameter layout): {first}")

    def _set_aside_newer(self, which: str, step: int):
        """Move the (damaged) saves newer than `step` out of orbax's way, so new saves can follow."""
        manager = self._managers.pop(which)
        manager.close()
        damaged = self.root / "damaged"
        damaged.mkdir(exist_ok=True)
        for path in (self.root / which).iterdir():
            if path.name.isdigit() and int(path.name) > step:
                target = damaged / f"{which}-{path.name}"
                while target.exists():
                    target = target.with_name(target.name + "+")
                path.rename(target)
                print(f"note: moved the damaged checkpoint {path} to {target}", file=sys.stderr)

    def restore_model(self, which: str = "latest"):
        """(graph definition, parameters, step) of the newest saved network that restores, built from
        that save's own configuration: no optimiser state is built or read."""
        from unroll.models import registry

        def partial(step, tree):  # only the parameters are read, onto this process's default device
            with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as reader:
                return reader.restore(self.root / which / str(step) / "state", args=ocp.args.PyTreeRestore(
                    tree, restore_args=ocp.checkpoint_utils.construct_restore_args(tree),
                    partial_restore=True))

        def read(step):
            graphdef, params = registry.build_split(self._config_at(which, step))
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params})
            layout = self._layout(which, step, abstract, partial=True)
            restored = partial(step, layout)
            self._verified(which, step, restored, ("params",))
            return graphdef, (restored if layout is abstract else _stacked(restored))["params"]

        found = self._first_readable(which, read)
        if found is None:
            raise CheckpointError(f"no {which} checkpoint in {self.root.parent}: train there first "
                                  "(--mode=train)")
        step, (graphdef, params) = found
        return graphdef, params, step

    def _restore(self, which, step, abstract):
        restored = self._manager(which).restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
        return restored["state"], restored["data"]

    def close(self):
        for manager in self._managers.values():
            try:
                manager.close()
            except Exception:  # closing after a failed save must not hide that failure
                pass
        self._managers.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _shapes(tree) -> dict:
    """{leaf name as orbax names it ("params.stages.raw_mu.value"): shape}."""
    return {jax.tree_util.keystr(path, simple=True, separator="."): tuple(x.shape)
            for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


@contextlib.contextmanager
def _quiet_orbax():
    """Orbax logs each failure of its writer threads with a traceback (and asyncio each unretrieved
    task) before the save raises; the save's own error says it on one line, so silence them."""
    loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


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
