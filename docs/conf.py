"""Sphinx configuration: Markdown pages (myst-parser), an API reference generated from the
docstrings (autodoc, autosummary, napoleon) and the examples gallery (sphinx-gallery), executed
on every build, offline, on a CPU."""

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the gallery runs on the CPU, also on a GPU machine
os.environ.setdefault("MPLBACKEND", "Agg")

import unroll  # noqa: E402

project = "unroll"
author = "the unroll authors"
copyright = "the unroll authors"  # noqa: A001
version = release = unroll.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip",
                    "**.codeobj.json"]
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"unroll {release}"
html_static_path = ["_static"]

autosummary_generate = True
autosummary_imported_members = False
# A package's page lists what it defines; what it re-exports is documented once, in its module.
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_mock_imports = ["torch", "tensorboardX"]
napoleon_google_docstring = True
napoleon_numpy_docstring = True
# The docstrings quote code between single backquotes, as Markdown does: show it as code.
default_role = "code"

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "abort_on_example_error": True,
    "reset_modules": ("matplotlib",),
    "min_reported_time": 1,
}


# ----------------------------------------------------------------------------------------------------
# The docstrings are written to read well as plain text (and on GitHub): `code` in single backquotes,
# |x| for absolute values, lists and command lines indented under a sentence without a blank line.
# This turns them into valid reStructuredText for the reference, without changing their text.

_BULLET = re.compile(r"^(\s*)([*-]|\d+\.|\(?[a-z0-9]\))\s+")
_CODE = re.compile(r"(``.*?``|`[^`]*`)")


def _escape_bars(line: str) -> str:
    parts = _CODE.split(line)
    return "".join(p if i % 2 else p.replace("|", r"\|") for i, p in enumerate(parts))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _continues_item(prev: str, line: str) -> bool:
    m = _BULLET.match(prev)
    return bool(m) and _indent(line) == m.end()


def _restructure(app, what, name, obj, options, lines):
    out, literal, doctest = [], None, False
    for line in lines:
        stripped = line.strip()
        if not stripped:
            doctest = False
            out.append(line)
            continue
        if literal is not None and _indent(line) <= literal:
            literal = None
        if stripped.startswith(">>>"):
            doctest = True
        if doctest or literal is not None:
            out.append(line)
            continue
        prev = next((p for p in reversed(out) if p.strip()), None)
        if out and out[-1].strip() and prev is not None and _indent(line) != _indent(prev):
            if not _continues_item(prev, line):
                out.append("")
        out.append(_escape_bars(line))
        if stripped.endswith("::"):
            literal = _indent(line)
    lines[:] = out


def setup(app):
    app.connect("autodoc-process-docstring", _restructure)
