"""One progress bar on stderr, for training steps and for tiles: redrawn in place on a TTY, a line
per tenth of the work (or when asked) otherwise (files, CI logs)."""

from __future__ import annotations

import sys
import time


def hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """`update(done, **fields)` draws `[####....] label done/total fields... rate/s ETA h:mm:ss`.

    `start` is where a resumed run begins (rates and ETA count from there). The stream is looked up
    when the bar is made, not at import: tests and tools may swap sys.stderr in between.
    """

    def __init__(self, total: int, label: str = "step", start: int = 0, stream=None,
                 enabled: bool = True, unit: str = "/s"):
        self.total, self.label, self.start, self.enabled, self.unit = total, label, start, enabled, unit
        self.stream = sys.stderr if stream is None else stream
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()
        self._next_line = start

    def update(self, done: int, force: bool = False, rate: float | None = None, **fields):
        """Draw the bar at `done`; off a TTY only every tenth of the work, at the end, or if `force`."""
        finished = done >= self.total
        if not self.enabled or (not self.tty and not (force or finished or done >= self._next_line)):
            return
        self._next_line = done + max(1, (self.total - self.start) // 10)
        elapsed = time.perf_counter() - self.t0
        if rate is None:
            rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
        per_item = elapsed / max(done - self.start, 1)
        filled = int(24 * done / max(self.total, 1))
        extra = "".join(f" {k.replace('_', ' ')} {v:.4f}" if isinstance(v, float) else f" {k} {v}"
                        for k, v in fields.items())
        line = (f"[{'#' * filled}{'.' * (24 - filled)}] {self.label} {done}/{self.total}{extra} "
                f"{rate:.1f}{self.unit} ETA {hms(per_item * (self.total - done))}")
        self.stream.write(("\r" if self.tty else "") + line + ("\n" if finished or not self.tty else ""))
        self.stream.flush()
