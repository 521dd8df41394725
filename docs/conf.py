"""Sphinx configuration for the clustrix documentation (Markdown pages through MyST, furo theme).

autodoc imports the installed distributions: build through ``nox -s docs``, which
installs every clustrix distribution first.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.util import logging

project = "clustrix"
author = "clustrix developers"
copyright = "clustrix developers"
release = "0.1.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "requirements.txt", "Thumbs.db", ".DS_Store"]

# No network at build time: intersphinx is enabled but maps nothing.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

myst_enable_extensions = ["colon_fence", "deflist", "fieldlist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

nitpicky = False

html_theme = "furo"
html_title = "clustrix"

_DOCS = Path(__file__).resolve().parent
_log = logging.getLogger("clustrix.docs")


def _page_exists(docname: str) -> bool:
    return any((_DOCS / f"{docname}{suffix}").exists() for suffix in (".md", ".rst"))


def _drop_unwritten_pages(app: Sphinx, docname: str, source: list[str]) -> None:
    """Leave pages that do not exist yet out of the index's toctree, saying so in the build log.

    The toctree in index.md lists every planned page in reading order; pages are
    written by different people at different times. Once all of them exist, this
    hook changes nothing.
    """
    if docname != "index":
        return
    lines = []
    in_toctree = False
    for line in source[0].splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("```{toctree}"):
            in_toctree = True
        elif in_toctree and stripped.startswith("```"):
            in_toctree = False
        elif in_toctree and re.fullmatch(r"[\w./-]+", stripped) and not _page_exists(stripped):
            _log.info(f"docs: page {stripped!r} is not written yet; left out of the index")
            continue
        lines.append(line)
    source[0] = "".join(lines)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("source-read", _drop_unwritten_pages)
    return {"parallel_read_safe": True}
