"""Files that survive a kill: atomic writes, one writer per folder, a failed write on one line.

Every file unroll writes for a user is written through `writing(path)`: to a hidden temporary name in
the same folder (`.<name>.unroll-<pid>-<token>.tmp<suffix>`: the suffix kept, so that libraries pick
the format from it), flushed to disk, then renamed over `path` (`os.replace`, atomic within a
folder). A process killed at any moment leaves either the old file or the complete new one under
the final name, never half of one. Temporaries of processes that are gone are removed by the next
write of the same name and by `clean(folder)`.

A write that fails for a reason of the machine (a full disk, a folder that cannot be written) raises
`WriteError` on one line naming the folder and its free space; the temporary is removed.

`exclusive(folder)` holds an advisory lock (`fcntl.flock` on `folder/.lock`) for a block: a second
process is refused at once with `FolderBusyError` naming the holder's process and host. The kernel
releases the lock when its holder exits in any way (kill -9 included), so it never goes stale; a
holder that finishes removes the file (a killed one leaves it, unlocked, for the next to take).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import glob
import json
import os
import re
import secrets
import shutil
import socket
import sys
from pathlib import Path

_TEMP = re.compile(r"^\.(?P<name>.+)\.unroll-(?P<pid>\d+)-[0-9a-f]+\.tmp")


class WriteError(RuntimeError):
    """A write failed for a reason of the machine (a full disk, an unwritable folder); the message
    names the folder and its free space. Files finished before it are intact."""


class FolderBusyError(RuntimeError):
    """Another process holds the folder's lock (`exclusive`)."""


def free_space(path) -> str:
    """Free space on the file system of `path` (or of its nearest existing parent), e.g. "12 MiB"."""
    path = Path(path).absolute()
    for folder in (path, *path.parents):
        if folder.exists():
            free = shutil.disk_usage(folder).free
            return f"{free / 2 ** 20:.0f} MiB" if free < 2 ** 30 else f"{free / 2 ** 30:.1f} GiB"
    return "unknown"


def _os_error(exc: BaseException) -> OSError | None:
    """The first error with an errno in `exc`'s chain (libraries often wrap it, or fail again while
    cleaning up after it)."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _reason(exc: BaseException) -> str:
    found = _os_error(exc)
    if found is not None:
        return os.strerror(found.errno)
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def write_error(path, exc: BaseException) -> WriteError:
    """The one-line WriteError for a failed write of `path` (a file, or the folder itself)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    return WriteError(f"cannot write {path.name} in {folder}: {_reason(exc)} "
                      f"({free_space(folder)} free there)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _stale(entry: Path, name: str | None = None) -> bool:
    match = _TEMP.match(entry.name)
    return bool(match) and (name is None or match["name"] == name) and not _alive(int(match["pid"]))


def clean(folder) -> int:
    """Remove the temporaries that killed writers left in `folder`; the number removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for entry in folder.glob(".*.unroll-*.tmp*"):
        if _stale(entry):
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


def temporary(path) -> Path:
    """A fresh temporary name for `path`, beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.unroll-{os.getpid()}-{secrets.token_hex(3)}.tmp{path.suffix}")


def _sync(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def writing(path):
    """Yield a temporary path to write `path`'s content to; on leaving the block the temporary is
    flushed and renamed to `path`. An exception removes the temporary (and leaves `path` as it was);
    an error of the machine (one with an errno: a full disk, no permission) becomes a one-line
    `WriteError`. Parent folders are created.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with writing(folder / "a.txt") as tmp:
    ...     _ = tmp.write_text("complete")
    >>> [p.name for p in folder.iterdir()], (folder / "a.txt").read_text()
    (['a.txt'], 'complete')
    """
    path = Path(path)
    tmp = temporary(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for entry in path.parent.glob(f".{glob.escape(path.name)}.unroll-*.tmp*"):
            if _stale(entry, path.name):
                entry.unlink(missing_ok=True)
        yield tmp
        _sync(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, Exception) and _os_error(exc) is not None:
            raise write_error(path, exc) from None
        raise


def write_text(path, text: str):
    """Write `text` to `path` atomically (see `writing`)."""
    with writing(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj, indent: int = 1):
    """Write `obj` as JSON to `path` atomically."""
    write_text(path, json.dumps(obj, indent=indent))


def write_csv(path, rows, fieldnames, **options):
    """Write `rows` (dicts) as a CSV with a header to `path` atomically (`options` go to
    `csv.DictWriter`, e.g. `extrasaction="ignore"`)."""
    with writing(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fieldnames), **options)
        writer.writeheader()
        writer.writerows(rows)


def read_json(path, redo: str):
    """The JSON in `path`, or None when it is missing or cannot be read (cut short by a kill in an
    older version, damaged): then a note on stderr says so and what happens instead (`redo`)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"note: {path} cannot be read ({_reason(exc)}): unfinished work, {redo}",
              file=sys.stderr)
        return None


@contextlib.contextmanager
def exclusive(folder, flag: str = "--workdir"):
    """Hold `folder`'s lock for the duration of the block; FolderBusyError at once if another
    process holds it (the message names it and suggests another `flag`). The folder is created;
    one that cannot be is a WriteError."""
    folder = Path(folder)
    path = folder / ".lock"
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise write_error(folder, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            try:
                holder = path.read_text().strip()
            except OSError:
                holder = ""
            raise FolderBusyError(f"{folder} is in use by {holder or 'another process'}; wait for it "
                                  f"to finish or use another {flag}") from None
        if _same_file(fd, path):
            break
        os.close(fd)  # its holder removed the file as we opened it: lock the one there now
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}".encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # while still held: whoever opened it retries on a new file
        os.close(fd)  # releases the lock


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


__all__ = ["FolderBusyError", "WriteError", "clean", "exclusive", "free_space", "read_json",
           "temporary", "write_csv", "write_error", "write_json", "write_text", "writing"]

