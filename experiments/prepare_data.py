"""Build a public data set's folder from its authors' download, and check it.

    python -m experiments.prepare_data --dataset=rsscn7 --source=RSSCN7-master.zip
    python -m experiments.prepare_data --dataset=levin2009 --source=~/Downloads/levin2009/
    python -m experiments.prepare_data --dataset=rsscn7          # check a prepared copy

`--source` is a folder or a .zip. The result goes to `--dest/<dataset>` (default: $UNROLL_DATA when
set, else ~/.cache/unroll), where `unroll.datasets` finds it, and is checked:
  * rsscn7: the seven classes, each a folder of images, found anywhere in the source by their names
    (the authors' `aGrass`, `bField`, ... or this project's `grass`, `field`, ...); per class the
    images in sorted file-name order, the first 80 to `train/<class>/`, the next 20 to
    `test/<class>/`. Checked: 80 and 20 per class, no file in both.
  * levin2009: `sharp/im{1..4}.png`, `kernels/kernel{1..8}.npy`, `blurred/im{i}_kernel{j}.png`, found
    anywhere in the source by file name, or made from the authors' MATLAB files
    `im0{5..8}_flit0{1..8}.mat` (sharp `x`, blurred `y`, kernel `f`; images and kernels numbered in
    sorted order). Checked: the SHA-256 of every file's content (8-bit pixels, float64 kernel
    values) is that of the copy the project's Levin scores were measured on.
The folder is built beside its destination and renamed into place when complete, so a killed run
leaves nothing half-made under the name (rerun the command); an existing folder is checked, never
replaced.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
from absl import app, flags

from experiments.common import UsageError, run_reporting_user_errors
from unroll import datasets

flags.DEFINE_enum("dataset", None, sorted(datasets.DATASETS), "the data set to prepare or check")
flags.DEFINE_string("source", None, "the authors' download: a folder or a .zip (omit to check a "
                    "prepared copy)")
flags.DEFINE_string("dest", None, "where to write <dataset>/ (default: $UNROLL_DATA, else "
                    "~/.cache/unroll)")
FLAGS = flags.FLAGS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
# A class folder's name, lower-cased with non-letters dropped, contains one of these.
RSSCN7_KEYS = {"field": "field", "forest": "forest", "grass": "grass", "industr": "industry",
               "parking": "parking", "resident": "residential", "river": "river_lake"}

# SHA-256 of the Levin et al. 2009 files' contents as this project reads them (the copy its scores
# come from): a PNG's 8-bit pixels, an .npy's float64 values, so that re-encoding does not matter.
LEVIN_SHA256 = {
    "blurred/im1_kernel1.png": "36963caa982fb481e0b854c00241e84002dc9daf194c8567124ab2d141e635a3",
    "blurred/im1_kernel2.png": "a8721c5ec4f2e7b80aea57d844e1dbde8175fcc6ece19785020368bb1ff201e1",
    "blurred/im1_kernel3.png": "081f4fa7e7a8c68791ef314d6ef02e6031c5a24d1c2e704e9ee714c23316eabe",
    "blurred/im1_kernel4.png": "951276db0d7dad9de780ef34fd02358d20613bcf7c6f7d7c831507bf4a0e8a4e",
    "blurred/im1_kernel5.png": "f0600ed7092a94cdbfc17cdd3c842263364970f06ff16b7506ffaf4ddf6deb41",
    "blurred/im1_kernel6.png": "5ec68144c7ff3ec2b725975489d92a8793c20a359d3c354b2daa64a9793dbcbf",
    "blurred/im1_kernel7.png": "3a5e5a08ffedcfe2efca7534dccd5952fb72dc376de0eed30071817bdab1775e",
    "blurred/im1_kernel8.png": "cf1647e80547e13420aadb8623ab7755471905e664b0835340f83cfa988ff71f",
    "blurred/im2_kernel1.png": "6a485209de29579ce8002f839fd5e5a50b7a99c60bf5a617ee969593cff53b9f",
    "blurred/im2_kernel2.png": "1094650600abe80ce4332cc79f86e2f191eb6002fb013b1284b7a525b5d2a228",
    "blurred/im2_kernel3.png": "71bbfcc1d83c7bfc8216b49280b86a8c17acfec1abe09fff22d14c688871f87a",
    "blurred/im2_kernel4.png": "76822d8470fffac2a8c6ff4a3bec469ed2da3d7e85574411bdb4be48409bd464",
    "blurred/im2_kernel5.png": "67f42ce021dbad43da8a80553899a9deefb412c83fdb8217e122514c407b7437",
    "blurred/im2_kernel6.png": "21b540a27a1ffebe2081ae0d4d1d51f5128b700bfd0dc7d9408ab96bd6be6fba",
    "blurred/im2_kernel7.png": "5a6d6b8d13ee6239ddd6407f46e0d096e9756bb39fe9a0c314818f75fcecd0b7",
    "blurred/im2_kernel8.png": "f6eccf0731e808ba82f2ad7668ebaa6999f855950f10e88a78a30d9139997cee",
    "blurred/im3_kernel1.png": "33d2085c95f010d606ecb82d31336709d64d19bf8ac320dc5a8acb11207f494c",
    "blurred/im3_kernel2.png": "d6453a7d9d952eb8ef816b3fbbf8c79ec23a0cc637e04381a680a10923360cf2",
    "blurred/im3_kernel3.png": "4093874990eecb0c05566ee3e2e58f7bcf721ac87c10e51aaac5f0e3bf04eeba",
    "blurred/im3_kernel4.png": "b4f3b54c6c9a829eb8a196819f522815f9ec268543850a7586b6581c9b4e2aa9",
    "blurred/im3_kernel5.png": "f546681bc4c651c8dc1360c8d9601212d9b9d0ad8171a6b5ebd99f41e1efc73f",
    "blurred/im3_kernel6.png": "08f8c05cf3c3a05007c24bbe815fd7d982b559522a91345bbf2350a55b1ab471",
    "blurred/im3_kernel7.png": "2bbda7f5bed237f8766d175b9ed7b50b8be310c825477f33950118b6d9c5708c",
    "blurred/im3_kernel8.png": "4d1699942fb7369110e02610606347d1e1f0408f78e6ef62c9341403c9c0dc94",
    "blurred/im4_kernel1.png": "8b28d889e6f82b23cbe0e860d41f63e31f5d540ff5711937f0f2f474c893dde5",
    "blurred/im4_kernel2.png": "085a2a0a9d3985fc132ce53211684e9c008d0480b1c516384c30180e31cfc48f",
    "blurred/im4_kernel3.png": "c95fb36267e180311f2f503500aa79fdadc2dcf32b3000be9b258531d6be7dff",
    "blurred/im4_kernel4.png": "d0c62f432a995e7e84e80447abfc9bce9ad81d736c4d6e7aa960066ddd3c22f8",
    "blurred/im4_kernel5.png": "5a39a70aa2202a42a14f6d69ffc062484b5e4322413fc7c58d9960f02a61a632",
    "blurred/im4_kernel6.png": "a3398f8241d9a29c2021b863566a46a02841eacc934444fc84ae612e9f1d76e6",
    "blurred/im4_kernel7.png": "85a7cf2f6feafa801bbda56da928a07b46997a63b27055eea6c6f15728b07e63",
    "blurred/im4_kernel8.png": "8a08d5a889f8e42e19b4cdb015c760dd4f00e68ffc7a4a9a869099521fde317d",
    "kernels/kernel1.npy": "790503b6f3f449eb344dbd02c892c987962b281b0e9d4242bd257345884d66b1",
    "kernels/kernel2.npy": "535770f6c9e43566c99c37f273f481d9adaf7db3bac278b60e8f4abfae243f30",
    "kernels/kernel3.npy": "e8388c216270ab4293711cc6c08cd62dfb5c727c4398a80e9e8f51b7ed5dcc80",
    "kernels/kernel4.npy": "79c819c0c8774b157b59684aba75a597f44ec5e65995ac59f76aabbbaf0e794d",
    "kernels/kernel5.npy": "11b770c03177aee0f60b6c99e194d18da4ac54e5d89be8b594a51b7e605da4f6",
    "kernels/kernel6.npy": "cb1f9bcda612b0d9f1b7a08056ae85eefcc5bb90640846a9cd5b1ed273647d75",
    "kernels/kernel7.npy": "f24d5b12ba26328cad24e5dba2bfdcb5c778e35713e7899051fb8006411a34cd",
    "kernels/kernel8.npy": "66c2fffff5ffd9fdf9428f7bd218c9839425137d6ff18738f058ff1f5052e172",
    "sharp/im1.png": "93795251f2207b4a9e7527f62092e8590988da211bed380aec256c53ef504503",
    "sharp/im2.png": "8700736a7ac9099e522fdb2c271b7c98cbdf645ac00c279f6fb1745bb337498b",
    "sharp/im3.png": "697b815617e4fe008ade37c867f75f1fd9ec188c99c8cefee82e0b54290bf936",
    "sharp/im4.png": "8ff863ff284b164ccf7fd43d109b3c9882eab6575ab062ee997325612246c928",
}


class Source:
    """The files of a folder or a .zip: relative posix path -> bytes on demand."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_dir():
            self.files = {p.relative_to(path).as_posix(): p for p in sorted(path.rglob("*"))
                          if p.is_file() and not p.name.startswith(".")}
            self._zip = None
        elif path.is_file() and zipfile.is_zipfile(path):
            self._zip = zipfile.ZipFile(path)
            self.files = {n: n for n in sorted(self._zip.namelist()) if not n.endswith("/")}
        else:
            raise UsageError(f"--source={path} is neither a folder nor a .zip file")

    def read(self, name: str) -> bytes:
        return self._zip.read(name) if self._zip else self.files[name].read_bytes()


def rsscn7_class(relpath: str) -> str | None:
    """The project's class name of an image at `relpath`, from its innermost class-named folder."""
    for part in reversed(relpath.split("/")[:-1]):
        key = re.sub(r"[^a-z]", "", part.lower())
        for word, name in RSSCN7_KEYS.items():
            if word in key:
                return name
    return None


def build_rsscn7(source: Source, out: Path):
    per_class: dict[str, dict[str, str]] = {c: {} for c in datasets.RSSCN7_CLASSES}
    for rel in source.files:
        name = rel.rsplit("/", 1)[-1]
        cls = rsscn7_class(rel)
        if cls and name.lower().endswith(IMAGE_SUFFIXES):
            per_class[cls].setdefault(name, rel)  # a file in both train/ and test/ counts once
    need = datasets.RSSCN7_TRAIN + datasets.RSSCN7_TEST
    short = {c: len(files) for c, files in per_class.items() if len(files) < need}
    if short:
        raise UsageError(f"{source.path} does not hold RSSCN7: each class needs {need} images, found "
                         + ", ".join(f"{c} {n}" for c, n in sorted(short.items())))
    for cls, files in per_class.items():
        names = sorted(files)[:need]
        for i, name in enumerate(names):
            split = "train" if i < datasets.RSSCN7_TRAIN else "test"
            target = out / split / cls / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read(files[name]))


def check_rsscn7(folder: Path):
    seen = {}
    for split, count in (("train", datasets.RSSCN7_TRAIN), ("test", datasets.RSSCN7_TEST)):
        for cls in datasets.RSSCN7_CLASSES:
            d = folder / split / cls
            names = sorted(p.name for p in d.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) \
                if d.is_dir() else []
            if len(names) != count:
                raise UsageError(f"{d} holds {len(names)} images, RSSCN7 has {count} there")
            for name in names:
                if seen.setdefault((cls, name), split) != split:
                    raise UsageError(f"{cls}/{name} is in both train/ and test/ of {folder}")


def build_levin2009(source: Source, out: Path, checksums=None):
    checksums = LEVIN_SHA256 if checksums is None else checksums
    by_name = {}
    for rel in source.files:
        by_name.setdefault(rel.rsplit("/", 1)[-1], rel)
    if not any(k.rsplit("/", 1)[-1] in by_name for k in checksums) and _levin_mat_files(by_name):
        _levin_from_mat(source, _levin_mat_files(by_name), out)
    else:
        missing = [k for k in checksums if k.rsplit("/", 1)[-1] not in by_name]
        if missing:
            raise UsageError(f"{source.path} does not hold Levin et al. 2009: {len(missing)} of its "
                             f"{len(checksums)} files are missing ({', '.join(missing[:3])}, ...)")
        for key in checksums:
            target = out / key
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read(by_name[key.rsplit("/", 1)[-1]]))
    check_levin2009(out, checksums)


def _levin_mat_files(by_name) -> dict[tuple[int, int], str]:
    found = {}
    for name, rel in by_name.items():
        m = re.fullmatch(r"im(\d+)_flit(\d+)\.mat", name.lower())
        if m:
            found[int(m[1]), int(m[2])] = rel
    return found


def _to_uint8(a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    if a.max() > 1.5:  # stored on 0-255
        a = a / 255.0
    return np.rint(np.clip(a, 0.0, 1.0) * 255).astype(np.uint8)


def _levin_from_mat(source: Source, files: dict, out: Path):
    """The authors' im05_flit01.mat ... files (x sharp, y blurred, f kernel) in the project's layout."""
    import io

    from PIL import Image
    from scipy.io import loadmat

    images = sorted({i for i, _ in files})
    kernels = sorted({j for _, j in files})
    if len(images) != 4 or len(kernels) != 8 or len(files) != 32:
        raise UsageError(f"{source.path}: expected 4 images x 8 kernels of MATLAB files, found "
                         f"{len(images)} x {len(kernels)} ({len(files)} files)")
    for sub in ("sharp", "kernels", "blurred"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for (i, j), rel in sorted(files.items()):
        mat = loadmat(io.BytesIO(source.read(rel)))
        if not {"x", "y", "f"} <= set(mat):
            raise UsageError(f"{rel} has no x, y and f (sharp, blurred, kernel)")
        a, b = images.index(i) + 1, kernels.index(j) + 1
        Image.fromarray(_to_uint8(mat["y"])).save(out / "blurred" / f"im{a}_kernel{b}.png")
        Image.fromarray(_to_uint8(mat["x"])).save(out / "sharp" / f"im{a}.png")
        np.save(out / "kernels" / f"kernel{b}.npy", np.asarray(mat["f"], np.float64))


def _content_digest(path: Path) -> str:
    """SHA-256 of a file's content as the project reads it: 8-bit pixels or float64 values."""
    if path.suffix == ".npy":
        values = np.ascontiguousarray(np.load(path), "<f8")
    else:
        from PIL import Image

        with Image.open(path) as im:
            values = np.ascontiguousarray(np.asarray(im), np.uint8)
    return hashlib.sha256(values.tobytes()).hexdigest()


def check_levin2009(folder: Path, checksums=None):
    checksums = LEVIN_SHA256 if checksums is None else checksums
    for key, digest in checksums.items():
        path = folder / key
        if not path.is_file():
            raise UsageError(f"{path} is missing")
        try:
            actual = _content_digest(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is named on one line
            raise UsageError(f"{path} cannot be read: {exc}") from None
        if actual != digest:
            raise UsageError(f"{path} is not the Levin et al. 2009 file the project's scores were "
                             "measured on (SHA-256 of its content differs)")


BUILD = {"rsscn7": build_rsscn7, "levin2009": build_levin2009}
CHECK = {"rsscn7": check_rsscn7, "levin2009": check_levin2009}


def prepare(name: str, source, dest) -> Path:
    """Build `dest/name` from `source` (a folder or .zip; None: only check), check it, return it."""
    dest = Path(dest).expanduser()
    final = dest / name
    if final.exists():
        CHECK[name](final)
        return final
    if source is None:
        raise UsageError(f"no {final}: give --source=FOLDER_OR_ZIP ({datasets.DATASETS[name].source})")
    src = Path(source).expanduser()
    if not src.exists():
        raise UsageError(f"--source={src} does not exist")
    partial = dest / f".{name}.partial"
    if partial.exists():  # a killed earlier run's; only this command writes there
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    BUILD[name](Source(src), partial)
    CHECK[name](partial)
    os.replace(partial, final)
    return final


def run(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {' '.join(argv[1:])!r} (flags look like --name=value)")
    if not FLAGS.dataset:
        raise UsageError(f"give --dataset={'|'.join(sorted(datasets.DATASETS))}")
    dest = Path(FLAGS.dest).expanduser() if FLAGS.dest else datasets.default_destination()
    folder = prepare(FLAGS.dataset, FLAGS.source, dest)
    print(f"{FLAGS.dataset}: {folder} (checked)")
    if dest.resolve() not in [r.expanduser().resolve() for r in datasets.roots()]:
        print(f"unroll.datasets looks there with UNROLL_DATA={dest}")


def main(argv):
    run_reporting_user_errors(run, argv)


if __name__ == "__main__":
    app.run(main)
