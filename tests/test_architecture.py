"""The package reads in dependency order: these import rules are checked on every module's source
(module-level and function-level imports alike), so a wrong-way import fails CI."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MATHS = ("unroll.ops", "unroll.shrinkage", "unroll.steps", "unroll.kernels", "unroll.metrics",
         "unroll.nonblind", "unroll.wavelets", "unroll.noise", "unroll.verdict")
ABOVE_MATHS = ("unroll.models", "unroll.data", "unroll.train", "unroll.inference", "unroll.studies",
               "unroll.classical", "unroll.checkpoint", "unroll.config", "unroll.losses",
               "unroll.levin", "unroll.plots", "unroll.progress", "unroll.pretrained", "unroll.atomic",
               "unroll.datasets")
OUTSIDE = ("experiments", "benchmarks", "absl")

# (modules the rule applies to, imports they must not make, why)
RULES = [
    (MATHS, ABOVE_MATHS, "the maths never imports models, data or training"),
    (("unroll.multiscale",), ABOVE_MATHS, "shared multi-scale helpers are maths"),
    (("unroll.losses",), ("unroll.models", "unroll.data", "unroll.train", "unroll.inference"),
     "losses import the maths and shared helpers, never a model"),
    (("unroll.models",), ("unroll.data", "unroll.train", "unroll.inference", "unroll.checkpoint",
                          "unroll.studies", "unroll.classical", "unroll.losses"),
     "models never import data or training"),
    (("unroll.data",), ("unroll.models", "unroll.train", "unroll.inference", "unroll.checkpoint",
                        "unroll.studies", "unroll.classical"),
     "data never imports models or training"),
    (("unroll.inference", "unroll.studies", "unroll.classical", "unroll.checkpoint", "unroll.levin",
      "unroll.pretrained"),
     ("unroll.train",), "inference, studies, the classical solver and the shipped models do not "
     "depend on the trainer"),
    (("unroll",), OUTSIDE, "the library never imports experiments or benchmarks, nor absl flags"),
    (("experiments",), ("benchmarks",), "experiments do not import benchmarks"),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(source: str, module: str) -> set[str]:
    """Absolute names of every module `source` imports (relative imports resolved from `module`)."""
    found = set()
    package = module.split(".")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(module: str, imported: set[str]) -> list[str]:
    return [f"{module} imports {name}: {why}"
            for applies, forbidden, why in RULES if _within(module, applies)
            for name in sorted(imported) if _within(name, forbidden)]


def _sources():
    for folder in ("unroll", "experiments"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield _module_name(path), path.read_text()


def test_import_rules_hold():
    problems = [v for module, source in _sources() for v in violations(module, imports_of(source, module))]
    assert not problems, "\n".join(problems)


def test_entry_points_do_not_import_each_other():
    entry_points = {m for m, _ in _sources() if m.startswith("experiments.")} - {"experiments.common"}
    problems = [f"{module} imports {name}" for module, source in _sources() if module in entry_points
                for name in imports_of(source, module) if name in entry_points]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module, source, bad", [
    ("unroll.ops", "from unroll.models import MGSTNet", True),
    ("unroll.noise", "from unroll.data import images", True),
    ("unroll.models.mgstnet", "def f():\n    from unroll import train\n", True),
    ("unroll.models.idc", "from . import blocks\nfrom ..data import images", True),
    ("unroll.inference.model", "import unroll.train.loop", True),
    ("unroll.data.pipeline", "from absl import flags", True),
    ("experiments.ablate", "from benchmarks.compile import compile_seconds", True),
    ("unroll.train.loop", "from unroll.models import registry\nfrom unroll import data", False),
])
def test_the_checker_catches_wrong_way_imports(module, source, bad):
    assert bool(violations(module, imports_of(source, module))) == bad
