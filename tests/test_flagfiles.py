"""Every shipped flagfile parses into a valid configuration (a typo in a flag name or value fails
here, not after an hour of training on another machine). The files are read by absl's own parser,
as the entry points read them, so a file passes here exactly when the command line accepts it."""

from pathlib import Path

import pytest
from absl import flags

import experiments.compare  # noqa: F401  (defines the compare flags that some flagfiles set)
from experiments.common import config_from_flagfile

ROOT = Path(__file__).resolve().parents[1]
FLAGS_DIR = ROOT / "experiments" / "flags"


@pytest.fixture(autouse=True)
def _from_the_repository_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # nested --flagfile= paths are relative to the root, as on the command line


@pytest.mark.parametrize("path", sorted(FLAGS_DIR.glob("*.flags")), ids=lambda p: p.name)
def test_flagfile_gives_a_valid_configuration(path):
    config_from_flagfile(path).validate()


@pytest.mark.parametrize("text,error,match", [
    ("--stages=2\n--kernel_sise=15\n", flags.UnrecognizedFlagError, "kernel_sise"),
    ("--remat=yes\n", flags.IllegalFlagValueError, "remat"),  # the CLI refuses it: so must the test
    ("--stages=two\n", flags.IllegalFlagValueError, "stages"),
    ("--flagfile=experiments/flags/missing.flags\n", flags.CantOpenFlagFileError, "missing.flags"),
])
def test_checker_refuses_what_the_command_line_refuses(tmp_path, text, error, match):
    (tmp_path / "bad.flags").write_text(text)
    with pytest.raises(error, match=match):
        config_from_flagfile(tmp_path / "bad.flags")


def test_values_are_read_as_the_command_line_reads_them(tmp_path):
    (tmp_path / "ok.flags").write_text("--flagfile=experiments/flags/tiny.flags\n--noremat\n"
                                       "--kernel_prox=false\n--image_prior=haar_gst\n--stages=3\n")
    config = config_from_flagfile(tmp_path / "ok.flags")
    assert (config.remat, config.kernel_prox, config.image_prior, config.stages) == (False, False, "haar_gst", 3)
    assert config.kernel_size == 7  # from the nested tiny.flags
    assert config_from_flagfile(tmp_path / "ok.flags", ["--stages=1"]).stages == 1  # later wins
    (tmp_path / "bad.flags").write_text("--kernel_size=16\n")
    with pytest.raises(ValueError, match="--kernel_size"):
        config_from_flagfile(tmp_path / "bad.flags").validate()
    assert not flags.FLAGS["stages"].present
