"""`unroll.datasets` (where data sets are found, one line when they are not) and
`experiments.prepare_data` (the project's layout built from an authors' download, then checked), on
small synthetic trees: no real data needed."""

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from experiments import prepare_data
from experiments.common import UsageError
from unroll import data, datasets

ROOT = Path(__file__).resolve().parents[1]
AUTHOR_FOLDERS = {"aGrass": "a", "bField": "b", "cIndustry": "c", "dRiverLake": "d", "eForest": "e",
                  "fResident": "f", "gParking": "g"}


def _authors_rsscn7(root: Path, per_class: int = 103) -> Path:
    """RSSCN7 as its authors lay it out (aGrass/a001.jpg, ...), files in reverse creation order."""
    for folder, letter in AUTHOR_FOLDERS.items():
        (root / folder).mkdir(parents=True)
        for i in reversed(range(1, per_class + 1)):
            (root / folder / f"{letter}{i:03d}.jpg").write_bytes(f"{folder} {i}".encode())
    return root


def _prepared(root: Path, name: str):
    for sub in datasets.DATASETS[name].folders:
        (root / name / sub).mkdir(parents=True)
    return root / name


def test_unroll_data_is_the_only_place_when_set(tmp_path, monkeypatch):
    home = tmp_path / "home"
    _prepared(home / ".cache" / "unroll", "levin2009")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(datasets.ENV, raising=False)
    assert datasets.levin2009() == home / ".cache" / "unroll" / "levin2009"
    monkeypatch.setenv(datasets.ENV, str(tmp_path / "elsewhere"))
    with pytest.raises(datasets.DatasetNotFoundError) as err:
        datasets.levin2009()
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "elsewhere") in message and ".cache" not in message
    assert "prepare_data --dataset=levin2009" in message and "Levin" in message
    _prepared(tmp_path / "elsewhere", "rsscn7")
    assert datasets.rsscn7("test") == tmp_path / "elsewhere" / "rsscn7" / "test"
    with pytest.raises(ValueError, match="split"):
        datasets.rsscn7("val")


def test_dataset_names_open_as_training_folders(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.ENV, str(tmp_path))
    prepare_data.prepare("rsscn7", _authors_rsscn7(tmp_path / "download", per_class=100), tmp_path)
    from PIL import Image

    for p in (tmp_path / "rsscn7" / "test").rglob("*.jpg"):  # decodable images for the source
        Image.new("RGB", (20, 20), (10, 200, 30)).save(p, format="JPEG")
    source = data.open_source("rsscn7:test", channels=3, split="test")
    assert len(source) == 7 * 20 and source.names[0] == "field/b081.jpg"
    assert datasets.resolve("rsscn7:train") == str(tmp_path / "rsscn7" / "train")
    with pytest.raises(data.DataError, match="split"):
        data.open_source("rsscn7:val")


def test_rsscn7_from_the_authors_folders_and_zip(tmp_path):
    download = _authors_rsscn7(tmp_path / "download")
    out = prepare_data.prepare("rsscn7", download, tmp_path / "data")
    assert out == tmp_path / "data" / "rsscn7"
    train = sorted(p.name for p in (out / "train" / "river_lake").iterdir())
    test = sorted(p.name for p in (out / "test" / "river_lake").iterdir())
    assert train == [f"d{i:03d}.jpg" for i in range(1, 81)]
    assert test == [f"d{i:03d}.jpg" for i in range(81, 101)]
    assert (out / "test" / "residential" / "f081.jpg").read_bytes() == b"fResident 81"
    assert not list((tmp_path / "data").glob(".*"))  # nothing half-made left beside it

    archive = tmp_path / "RSSCN7.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(download.rglob("*.jpg")):
            z.write(p, "RSSCN7-master/" + p.relative_to(download).as_posix())
    again = prepare_data.prepare("rsscn7", archive, tmp_path / "fromzip")
    assert sorted(p.name for p in (again / "train" / "river_lake").iterdir()) == train
    # the project's own layout as a source gives the same split
    same = prepare_data.prepare("rsscn7", out, tmp_path / "copy")
    assert sorted(p.name for p in (same / "test" / "river_lake").iterdir()) == test


def test_rsscn7_short_or_damaged_copies_are_refused(tmp_path):
    download = _authors_rsscn7(tmp_path / "download")
    (download / "gParking" / "g050.jpg").unlink()
    for i in range(60, 104):
        (download / "gParking" / f"g{i:03d}.jpg").unlink(missing_ok=True)
    with pytest.raises(UsageError, match="parking 58"):
        prepare_data.prepare("rsscn7", download, tmp_path / "data")
    assert not (tmp_path / "data" / "rsscn7").exists()
    good = prepare_data.prepare("rsscn7", _authors_rsscn7(tmp_path / "d2"), tmp_path / "data")
    (good / "test" / "forest" / "e099.jpg").unlink()
    with pytest.raises(UsageError, match="forest holds 19 images"):
        prepare_data.prepare("rsscn7", None, tmp_path / "data")  # an existing copy: checked, kept
    assert (good / "train" / "forest" / "e001.jpg").is_file()


def test_levin_files_are_found_by_name_and_checked(tmp_path):
    download = tmp_path / "download" / "deep"
    download.mkdir(parents=True)
    keys = ["sharp/im1.png", "kernels/kernel1.npy", "blurred/im1_kernel1.png"]
    sums = {}
    for key in keys:
        content = f"content of {key}".encode()
        (download / key.split("/")[1]).write_bytes(content)
        sums[key] = hashlib.sha256(content).hexdigest()
    source = prepare_data.Source(tmp_path / "download")
    prepare_data.build_levin2009(source, tmp_path / "out", sums)
    assert (tmp_path / "out" / "kernels" / "kernel1.npy").read_bytes() == b"content of kernels/kernel1.npy"
    (download / "im1.png").write_bytes(b"changed")
    with pytest.raises(UsageError, match="im1.png .*SHA-256"):
        prepare_data.build_levin2009(prepare_data.Source(tmp_path / "download"), tmp_path / "out2", sums)
    with pytest.raises(UsageError, match="44 files are missing"):
        prepare_data.prepare("levin2009", tmp_path / "download", tmp_path / "data")
    assert set(prepare_data.LEVIN_SHA256) >= set(keys) and len(prepare_data.LEVIN_SHA256) == 4 + 8 + 32


def test_commands_without_the_data_say_how_to_get_it_on_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "UNROLL_DATA": str(tmp_path / "nowhere"),
           "HOME": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    levin = subprocess.run([sys.executable, "-m", "experiments.levin", "--method=input",
                            f"--workdir={tmp_path / 'X'}"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert levin.returncode == 2, levin.stderr
    (line,) = levin.stderr.strip().splitlines()
    assert "Levin et al. 2009" in line and "prepare_data --dataset=levin2009" in line and "http" in line
    assert not (tmp_path / "X").exists()
    check = subprocess.run([sys.executable, "-m", "experiments.prepare_data", "--dataset=rsscn7"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 2 and len(check.stderr.strip().splitlines()) == 1
    assert "--source=" in check.stderr
