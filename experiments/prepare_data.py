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
    anywhere in the source by file name. Checked: every file's SHA-256 is that of the copy the
    project's Levin scores were measured on.
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

# SHA-256 of the Levin et al. 2009 files as this project reads them (the copy its scores come from).
LEVIN_SHA256 = {
    "blurred/im1_kernel1.png": "99bae020ec046ad07cfd782df93a2e034cf361924f959cd0e8f358f59c1fde79",
    "blurred/im1_kernel2.png": "ff149271985f4b75d0acb455a84a775a8658fa4fa0161cb1afd90d61c046032e",
    "blurred/im1_kernel3.png": "1697562f0dd011bfb51931387b79dab8b4777663d5818c832c9ba83d03fe8083",
    "blurred/im1_kernel4.png": "6f1ce54d5d2ff4b4d7ed295d490fd0b49b1d7f21bdd2b9ce511b1740318864ba",
    "blurred/im1_kernel5.png": "956b64445b40a2d5a18aa82c87e552e3e87b8c3bab10b607f0b005e4be7a3a8b",
    "blurred/im1_kernel6.png": "c11b41668fafc178cb9d9b6c376d576d0a417da9e8d3b2f105a76eda84513621",
    "blurred/im1_kernel7.png": "853c612dd1f1eb0705cb1e0a19e043a434f0ecd2719b84024ca9bb0e0cc1b70f",
    "blurred/im1_kernel8.png": "736ea69e7b9396e24ba0cb48d2a23438e1ebd7207637f4c51a73eddc72d4e497",
    "blurred/im2_kernel1.png": "a3ab79c63651c25781df3bc4634e27e3f1eddfbbc17eeb596136da47691ffa36",
    "blurred/im2_kernel2.png": "5cc2c6b816da3b62572c46fd313d08fc9607b40c6b9418f8a4c8ba1a4467e151",
    "blurred/im2_kernel3.png": "ce381229863d766bd01bad99c73c8ce0fcedca8baa74559d937a32bb772dab41",
    "blurred/im2_kernel4.png": "e28a6c0d7ec33be432e7fad1d23aba79f405c4b072e8fc4dbf63192f65419f8c",
    "blurred/im2_kernel5.png": "12884f8e8ed918eade594d5100d06b2fb30c74f2f21e78196fc1ca3a38edeb15",
    "blurred/im2_kernel6.png": "c748285a2bdab6689aa475403ed4d0b887c0f109ce5897321f78dc348bc69001",
    "blurred/im2_kernel7.png": "7a6a0377bac202f77be0fe3c132170a78e194d319cbeb34804436b755c97fcd2",
    "blurred/im2_kernel8.png": "a13fe0f90379393bc14f7ccb51222eb693fe51a8a7a61588a01e13f4dac5a49e",
    "blurred/im3_kernel1.png": "5785debe84bf068d04e8b17c24a8c5ad3a4ba3d611cd56d07befaae722828b59",
    "blurred/im3_kernel2.png": "b61e141cac9b4d4c8a3a6d08f024a40d05d60bb5fd750f4856b92aca1482d1a4",
    "blurred/im3_kernel3.png": "3b1fe7f07ef758e6eee5fe70ffc3464c8fd2e2743d2d18ff6915cca144ed986f",
    "blurred/im3_kernel4.png": "27c5aff7faa9e2ee140556f6718a39e034fff3156be96742d667cd6fb776b73f",
    "blurred/im3_kernel5.png": "e5aef15315d78f5f1ad2844378c877ca64ea22503a38b71505c972cbfe00aa30",
    "blurred/im3_kernel6.png": "08e4f02d1f31c1c7bb83f478ebc999aedcc665440c22443a1022500e3b03de8d",
    "blurred/im3_kernel7.png": "7a9a661388e0feb6f48ab07195433ee0c83999f61d4d366a813c5dcacad242d6",
    "blurred/im3_kernel8.png": "e85222a554787bb91b28b6e282462204298cc6efb55c1c3e638e6ace229627be",
    "blurred/im4_kernel1.png": "a0bbd02439f37a073bc0982f51e6504356bb33712a83f1133caea60bec3b3467",
    "blurred/im4_kernel2.png": "d1f4c5c6f4593d7fccfc8a9b25e3357244ddaea2aaa469fcb4324d0de92930b2",
    "blurred/im4_kernel3.png": "d7dc1626d9d6b35d3d8b72f934dd77fe5df1a9bc7478287ee5f27b361baae997",
    "blurred/im4_kernel4.png": "da1457f9bf96b17f82a6eeb56d62f7f34db38dabca1bab9ae8dd76d5676bf123",
    "blurred/im4_kernel5.png": "3291a8e8be25462889b7a54f32a08958bc966983d46c631edebb328cdcd42db1",
    "blurred/im4_kernel6.png": "62b403a31729b6d7bdaadf0267e7108c2f06039893cba70fcad2ff03332a81e4",
    "blurred/im4_kernel7.png": "13f3c5adb4d040c6c43a2746c8c12418025d02137f2cbf0e4b02c57f3741cdcd",
    "blurred/im4_kernel8.png": "531f2cdd22675fd507e036d2c372f1275dca5a2d92c1e6289bd9ef5a59c9cf8f",
    "kernels/kernel1.npy": "38af4f2c88023bdcaa967ed9aeb48f43029f255c0ebfdb65276f80e84655e666",
    "kernels/kernel2.npy": "3aed389c170799ef31be831fcec35070f19f71ce73aca68bcc727435cc257a53",
    "kernels/kernel3.npy": "1ad7a772dd643e759096aaf892f134ce8df894fb3d2b7ecb6b5c0ca3a2b29381",
    "kernels/kernel4.npy": "2df711284ea7d5de023c37cec7ead856cb41e32b47b8acf5670e839c981ec77c",
    "kernels/kernel5.npy": "339dc364cd5734a66d69e43db1802a08424d39ec1bc7d64547aabf9bb1c0387b",
    "kernels/kernel6.npy": "f48dd6b164626ba8af923f07e51794e781d620deb096c9b0c67d96531ec45291",
    "kernels/kernel7.npy": "ae45196870fd8e1da2ab98822d6bb35bad53d8bef33daff6433678301c5de2a4",
    "kernels/kernel8.npy": "33f6c63cf9096168815718004f71da7233acdccb67a70e82b919a5bb437b628d",
    "sharp/im1.png": "219c07f1ba91ae826b44d4798b6d104205983629491c0bb9344588470eb765aa",
    "sharp/im2.png": "3ca3e2d10a61733847005603b83c59747356141664cabd6ae27ad6750d7cc890",
    "sharp/im3.png": "f70e815f3d711f9f2138c00bbc04769a7964f1f44442320e353b976a6f74d43d",
    "sharp/im4.png": "207cf093bacdf4a68a6dc23d473aa8beeb6456e9ab46a805f9bb55ab48d4e95a",
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
    missing = [k for k in checksums if k.rsplit("/", 1)[-1] not in by_name]
    if missing:
        raise UsageError(f"{source.path} does not hold Levin et al. 2009: {len(missing)} of its "
                         f"{len(checksums)} files are missing ({', '.join(missing[:3])}, ...)")
    for key in checksums:
        target = out / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read(by_name[key.rsplit("/", 1)[-1]]))
    check_levin2009(out, checksums)


def check_levin2009(folder: Path, checksums=None):
    checksums = LEVIN_SHA256 if checksums is None else checksums
    for key, digest in checksums.items():
        path = folder / key
        if not path.is_file():
            raise UsageError(f"{path} is missing")
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise UsageError(f"{path} is not the Levin et al. 2009 file the project's scores were "
                             "measured on (SHA-256 differs)")


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
