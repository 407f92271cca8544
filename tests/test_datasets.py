"""`unroll.datasets` (where data sets are found, one line when they are not) and
`experiments.prepare_data` (the project's layout built from an authors' download, then checked), on
small synthetic trees: no real data needed."""

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
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


def _levin_arrays(rng):
    """Small stand-ins for Levin's files: 8-bit sharp and blurred images, float64 kernels."""
    sharp = {i: rng.integers(0, 256, (12, 12), dtype=np.uint8) for i in range(1, 5)}
    kernels = {j: rng.random((3, 3)) for j in range(1, 9)}
    blurred = {(i, j): rng.integers(0, 256, (12, 12), dtype=np.uint8) for i in sharp for j in kernels}
    sums = {f"sharp/im{i}.png": _sha(a) for i, a in sharp.items()}
    sums.update({f"kernels/kernel{j}.npy": _sha(k.astype("<f8")) for j, k in kernels.items()})
    sums.update({f"blurred/im{i}_kernel{j}.png": _sha(a) for (i, j), a in blurred.items()})
    return sharp, kernels, blurred, sums


def _sha(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def test_levin_files_are_found_by_name_and_checked(tmp_path):
    from PIL import Image

    sharp, kernels, blurred, sums = _levin_arrays(np.random.default_rng(0))
    download = tmp_path / "download" / "deep"
    download.mkdir(parents=True)
    for i, a in sharp.items():
        Image.fromarray(a).save(download / f"im{i}.png")
    for j, k in kernels.items():
        np.save(download / f"kernel{j}.npy", k)
    for (i, j), a in blurred.items():
        Image.fromarray(a).save(download / f"im{i}_kernel{j}.png")
    out = tmp_path / "out"
    prepare_data.build_levin2009(prepare_data.Source(tmp_path / "download"), out, sums)
    np.testing.assert_array_equal(np.load(out / "kernels" / "kernel5.npy"), kernels[5])
    np.testing.assert_array_equal(np.asarray(Image.open(out / "blurred" / "im3_kernel2.png")), blurred[3, 2])
    Image.fromarray(255 - sharp[1]).save(download / "im1.png")
    with pytest.raises(UsageError, match="im1.png .*SHA-256"):
        prepare_data.build_levin2009(prepare_data.Source(tmp_path / "download"), tmp_path / "out2", sums)
    with pytest.raises(UsageError, match="is not the Levin"):  # the project's own checksums
        prepare_data.prepare("levin2009", tmp_path / "download", tmp_path / "data")
    assert not (tmp_path / "data" / "levin2009").exists()
    assert len(prepare_data.LEVIN_SHA256) == 4 + 8 + 32


def test_levin_from_the_authors_matlab_files(tmp_path):
    from PIL import Image
    from scipy.io import savemat

    sharp, kernels, blurred, sums = _levin_arrays(np.random.default_rng(1))
    (tmp_path / "mat").mkdir()
    for (i, j), y in blurred.items():  # images 5-8 and filters 1-8, values on [0, 1]
        savemat(tmp_path / "mat" / f"im0{i + 4}_flit0{j}.mat",
                {"x": sharp[i] / 255.0, "y": y / 255.0, "f": kernels[j]})
    out = tmp_path / "out"
    prepare_data.build_levin2009(prepare_data.Source(tmp_path / "mat"), out, sums)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "sharp" / "im2.png")), sharp[2])
    np.testing.assert_array_equal(np.load(out / "kernels" / "kernel8.npy"), kernels[8])
    (tmp_path / "mat" / "im05_flit03.mat").unlink()
    with pytest.raises(UsageError, match="31 files"):
        prepare_data.build_levin2009(prepare_data.Source(tmp_path / "mat"), tmp_path / "out2", sums)


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
