"""Deblurring as a job that survives (`unroll.inference.deblur` over `unroll.atomic`): a kill leaves no
half-written output and rerunning the command finishes the job; a second deblur into the folder in
use is refused naming the first; a full disk or an unwritable folder is one line, keeping the
outputs finished before it."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unroll import atomic, data
from unroll.config import Config
from unroll.inference import deblur
from unroll.inference.model import Model
from unroll.models import registry

WORKER = Path(__file__).with_name("deblur_worker.py")
TINY = Config(stages=2, scales=1, kernel_rcabs=1, image_rcabs=1, features=8, kernel_features=4,
              kernel_size=7, channels=3)  # deblur_worker.py's model


@pytest.fixture(scope="module")
def model():
    return Model(TINY, *registry.build_split(TINY))


def _photos(folder: Path, count: int) -> list[str]:
    rng = np.random.default_rng(5)
    for i in range(count):
        data.save_image(folder / f"im{i}.png", rng.random((24, 28, 3)))
    return [f"im{i}" for i in range(count)]


def _outputs(names) -> list[str]:
    return sorted(f"{n}_{kind}.png" for n in names for kind in ("deblurred", "kernel"))


def test_a_killed_deblur_is_finished_by_a_rerun_and_a_second_writer_is_refused(tmp_path, model,
                                                                                 capsys):
    photos, out = tmp_path / "photos", tmp_path / "out"
    names = _photos(photos, 6)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    # Killed as its 5th file (im2's image) is complete under its temporary name, not yet renamed.
    worker = subprocess.Popen([sys.executable, str(WORKER), str(photos), str(out), "5"], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == "hanging"
        listed = sorted(os.listdir(out))
        assert [n for n in listed if not n.startswith(".")] == _outputs(names[:2])
        assert len([n for n in listed if n.startswith(".im2_deblurred.png.unroll-")]) == 1
        # A second deblur into the folder in use is refused at once, naming the first.
        with pytest.raises(atomic.FolderBusyError, match=f"process {worker.pid} on .*--output_dir") as err:
            deblur.deblur_files(model, [photos], out)
        assert "\n" not in str(err.value) and sorted(os.listdir(out)) == listed
    finally:
        worker.kill()
        worker.wait()
    kept = {n: (out / n).read_bytes() for n in _outputs(names[:2])}

    capsys.readouterr()
    written = deblur.deblur_files(model, [photos], out)  # the same command again, no --overwrite
    err = capsys.readouterr().err
    assert "2 of 6 input(s) already have complete outputs" in err
    assert "removed 1 unfinished temporary file(s)" in err
    assert written == [out / f"{n}_deblurred.png" for n in names]
    assert sorted(os.listdir(out)) == _outputs(names)  # no temporary, no lock file left
    assert all(data.written_by_unroll(out / n) and data.decodes_whole(out / n) for n in _outputs(names))
    assert {n: (out / n).read_bytes() for n in kept} == kept
    # What the killed run finished is what a run never killed writes (same network, same input).
    deblur.deblur_files(model, [photos / "im0.png", photos / "im3.png"], tmp_path / "fresh")
    for n in ("im0_deblurred.png", "im0_kernel.png", "im3_deblurred.png"):
        assert (tmp_path / "fresh" / n).read_bytes() == (out / n).read_bytes(), n


def test_a_full_disk_is_one_line_and_keeps_the_finished_outputs(tmp_path, model, monkeypatch, capsys):
    photos, out = tmp_path / "photos", tmp_path / "out"
    names = _photos(photos, 3)
    save, calls = Image.Image.save, [0]

    def disk_fills(self, fp, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:  # im1's image: a part of it written, then the disk is full
            Path(fp).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", disk_fills)
    with pytest.raises(atomic.WriteError) as err:
        deblur.deblur_files(model, [photos], out)
    message = str(err.value)
    assert "\n" not in message and "No space left on device" in message
    assert f"im1_deblurred.png in {out}" in message and "free there" in message
    assert "the 1 input(s) finished before it are kept" in message
    assert sorted(os.listdir(out)) == _outputs(names[:1])  # no partial file, no temporary

    monkeypatch.undo()  # space again: the rerun finishes the job
    deblur.deblur_files(model, [photos], out)
    assert "1 of 3 input(s) already have complete outputs" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == _outputs(names)

    # A folder that cannot be made (a file in its way) is one line too, before any work.
    (tmp_path / "file").write_text("x")
    with pytest.raises(atomic.WriteError, match=f"cannot write out in {tmp_path / 'file'}") as err:
        deblur.deblur_files(model, [photos], tmp_path / "file" / "out")
    assert "\n" not in str(err.value)


def test_overwrite_redoes_outputs_and_an_unfinished_one_of_ours_is_redone(tmp_path, model, capsys):
    photos, out = tmp_path / "photos", tmp_path / "out"
    names = _photos(photos, 2)
    deblur.deblur_files(model, [photos], out)
    # An output of ours cut short (as an older version could leave it) is unfinished: redone.
    image = out / "im1_deblurred.png"
    whole = image.read_bytes()
    image.write_bytes(whole[:len(whole) // 2])
    assert data.written_by_unroll(image) and not data.decodes_whole(image)
    capsys.readouterr()
    deblur.deblur_files(model, [photos], out)
    assert "1 of 2 input(s) already have complete outputs" in capsys.readouterr().err
    assert image.read_bytes() == whole
    # --overwrite redoes (and replaces) unroll's complete outputs.
    os.utime(image, (0, 0))
    deblur.deblur_files(model, [photos], out, overwrite=True)
    assert "already have complete outputs" not in capsys.readouterr().err
    assert image.stat().st_mtime > 0 and sorted(os.listdir(out)) == _outputs(names)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg"])
def test_a_file_cut_short_is_not_whole(tmp_path, suffix):
    path = tmp_path / f"a{suffix}"
    data.save_image(path, np.random.default_rng(0).random((64, 48, 3)), mark=True)
    assert data.decodes_whole(path) and data.written_by_unroll(path)
    whole = path.read_bytes()
    path.write_bytes(whole[:len(whole) * 3 // 5])
    assert not data.decodes_whole(path)
