"""unroll.atomic: a file appears complete or not at all, temporaries of dead writers are cleaned, a
failed write (a full disk, a folder that cannot be made) is one line naming the folder and its free
space, and the folder lock names its holder and is taken over when the holder is gone."""

import errno
import os
import subprocess
import sys

import pytest

from unroll import atomic

# Writes the first half of the content to the temporary, says so, and waits to be killed.
KILLED = """import sys, time
from unroll import atomic
with atomic.writing(sys.argv[1]) as tmp:
    tmp.write_bytes(b"x" * 1000)
    print(tmp, flush=True)
    time.sleep(60)
    tmp.write_bytes(b"x" * 2000)
"""


def test_a_kill_mid_write_leaves_the_old_file_and_the_next_write_cleans_up(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")
    writer = subprocess.Popen([sys.executable, "-c", KILLED, str(target)], stdout=subprocess.PIPE,
                              text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        tmp = tmp_path / os.path.basename(writer.stdout.readline().strip())
        assert tmp.stat().st_size == 1000 and tmp.name.startswith(".report.json.unroll-")
        assert atomic.clean(tmp_path) == 0  # its writer is alive: not touched
    finally:
        writer.kill()
        writer.wait()
    assert target.read_text() == "old" and tmp.exists()
    atomic.write_json(target, {"new": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    assert target.read_text() == '{\n "new": 1\n}'


def test_clean_removes_only_temporaries_of_dead_processes(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".a.png.unroll-{dead}-abc123.tmp.png"
    live = tmp_path / f".b.png.unroll-{os.getpid()}-abc123.tmp.png"
    users = tmp_path / ".a.png.unroll-notes.txt"  # not ours: another pattern
    for path in (stale, live, users):
        path.write_text("x")
    assert atomic.clean(tmp_path) == 1
    assert not stale.exists() and live.exists() and users.exists()


def test_an_error_inside_the_block_leaves_nothing_and_passes_through(tmp_path):
    target = tmp_path / "a.csv"
    with pytest.raises(KeyError):
        with atomic.writing(target) as tmp:
            tmp.write_text("half")
            raise KeyError("a bug, not the machine")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_line_naming_the_folder_and_its_free_space(tmp_path):
    target = tmp_path / "sub" / "a.csv"
    with pytest.raises(atomic.WriteError) as err:
        with atomic.writing(target) as tmp:
            tmp.write_text("half")
            try:  # as libraries do it: the error of the disk, then another while closing
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError:
                raise ValueError("cannot close the file") from None
    message = str(err.value)
    assert "\n" not in message and "No space left on device" in message
    assert f"a.csv in {target.parent}" in message and "free there" in message
    assert list(target.parent.iterdir()) == []
    # A folder that cannot be made (a file is in its way) is the same kind of line.
    (tmp_path / "file").write_text("x")
    with pytest.raises(atomic.WriteError, match="File exists|Not a directory"):
        atomic.write_text(tmp_path / "file" / "b.txt", "y")
    with pytest.raises(atomic.WriteError, match="File exists|Not a directory"):
        with atomic.exclusive(tmp_path / "file" / "out"):
            pass


def test_csv_and_json_round_trip(tmp_path):
    rows = [{"name": "a", "psnr": 1.5}, {"name": "b", "psnr": 2.0}]
    atomic.write_csv(tmp_path / "t.csv", rows, ["name", "psnr"])
    assert (tmp_path / "t.csv").read_text().splitlines() == ["name,psnr", "a,1.5", "b,2.0"]
    atomic.write_json(tmp_path / "t.json", rows)
    assert atomic.read_json(tmp_path / "t.json", "redo") == rows
    assert atomic.read_json(tmp_path / "missing.json", "redo") is None


def test_cut_short_json_is_noted(tmp_path, capsys):
    (tmp_path / "cut.json").write_text('{"a": [1, 2')
    assert atomic.read_json(tmp_path / "cut.json", "computing it again") is None
    err = capsys.readouterr().err
    assert "cut.json cannot be read" in err and "computing it again" in err and err.count("\n") == 1


def test_the_lock_is_removed_on_release_and_a_second_holder_is_refused(tmp_path):
    with atomic.exclusive(tmp_path, "--output_dir"):
        assert (tmp_path / ".lock").read_text().startswith(f"process {os.getpid()} on ")
        with pytest.raises(atomic.FolderBusyError, match=f"process {os.getpid()} on .*--output_dir"):
            with atomic.exclusive(tmp_path, "--output_dir"):
                pass
    assert not (tmp_path / ".lock").exists()
    # A lock file left by a killed holder (the kernel dropped its lock) is simply taken.
    (tmp_path / ".lock").write_text("process 1 on elsewhere")
    with atomic.exclusive(tmp_path):
        assert (tmp_path / ".lock").read_text().startswith(f"process {os.getpid()}")
