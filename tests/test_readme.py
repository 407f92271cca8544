"""The README's promises: its Python blocks run as written (after the two set-up commands), its
second set-up command is what CI runs, and it stays short."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def test_python_blocks_run_as_written(tmp_path, monkeypatch, capsys):
    blocks = _blocks("python")
    assert blocks, "the README has no Python block"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out
    assert "(303, 384) uint8 (31, 31)" in printed  # gray uint8 in, gray uint8 out


def test_ci_runs_the_second_set_up_command():
    commands = _blocks("bash")[0].strip().splitlines()
    assert len(commands) == 2 and commands[0].startswith("pip install -e . && python -m experiments.mgstnet")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci
    assert any(line.startswith("pip install -e \".[docs]\" && python -m sphinx -W") for line in ci)


def test_readme_is_short_and_its_picture_small():
    assert len(README.splitlines()) <= 120
    picture = ROOT / "docs" / "_static" / "before_after.png"
    assert "docs/_static/before_after.png" in README and picture.stat().st_size < 100_000
