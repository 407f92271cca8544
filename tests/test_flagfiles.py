"""Every shipped flagfile parses into a valid configuration (a typo in a flag name or value fails
here, not after an hour of training on another machine)."""

import dataclasses
from pathlib import Path

import pytest

from unroll.config import Config

ROOT = Path(__file__).resolve().parents[1]
FLAGS_DIR = ROOT / "experiments" / "flags"
# Flags of entry points other than the Config fields (experiments.compare's).
ENTRY_POINT_FLAGS = {"models", "noise_levels", "baseline_features", "model_steps", "model_learning_rates"}


def read_flagfile(path: Path) -> dict[str, str]:
    """{flag: value} of a flagfile, nested --flagfile= included (later lines win, as in absl)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line.startswith("--"):
            continue
        name, _, value = line[2:].partition("=")
        if name == "flagfile":
            values.update(read_flagfile(ROOT / value))
        else:
            values[name] = value
    return values


def config_of(path: Path) -> Config:
    fields = {f.name: f for f in dataclasses.fields(Config)}
    values = read_flagfile(path)
    unknown = sorted(set(values) - set(fields) - ENTRY_POINT_FLAGS)
    assert not unknown, f"{path.name}: unknown flags {unknown}"
    config = Config()
    for name, value in values.items():
        if name in fields:
            kind = type(fields[name].default)
            setattr(config, name, value.lower() in ("", "true", "1") if kind is bool else kind(value))
    return config


@pytest.mark.parametrize("path", sorted(FLAGS_DIR.glob("*.flags")), ids=lambda p: p.name)
def test_flagfile_gives_a_valid_configuration(path):
    config_of(path).validate()


def test_checker_catches_a_bad_flagfile(tmp_path):
    (tmp_path / "bad.flags").write_text("--stages=2\n--kernel_sise=15\n")
    with pytest.raises(AssertionError, match="kernel_sise"):
        config_of(tmp_path / "bad.flags")
    (tmp_path / "bad.flags").write_text("--kernel_size=16\n")
    with pytest.raises(ValueError, match="--kernel_size"):
        config_of(tmp_path / "bad.flags").validate()
