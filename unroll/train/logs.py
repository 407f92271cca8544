"""Training scalars: `DIR/log.jsonl` (appended across resumes) and TensorBoard when tensorboardX exists."""

from __future__ import annotations

import json
from pathlib import Path

import jax

from unroll import atomic


class ScalarLog:
    """`resume_step`: the step training resumes from (0 for a fresh start). Lines after it (written
    before a kill, and about to be written again) and a last line cut short by a kill are dropped,
    so the log holds each step once."""

    def __init__(self, workdir: Path, resume_step: int = 0):
        self.path = workdir / "log.jsonl"
        self.writer = None
        self._latest = {}  # scalar -> its newest value among the lines kept
        if jax.process_index() == 0:
            self._keep_until(resume_step)
            try:
                from tensorboardX import SummaryWriter
                self.writer = SummaryWriter(str(workdir / "tensorboard"))
            except ImportError:
                pass

    def _keep_until(self, step: int):
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and entry.get("step", step + 1) <= step:
                kept.append(line + "\n")
                self._latest.update(entry)
        atomic.write_text(self.path, "".join(kept))

    def latest(self, name: str, default=None):
        """The newest value of scalar `name` in the lines kept from an earlier run."""
        return self._latest.get(name, default)

    def write(self, step: int, **scalars):
        if jax.process_index() != 0:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **scalars}) + "\n")
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, step)

    def close(self):
        if self.writer is not None:
            self.writer.close()
