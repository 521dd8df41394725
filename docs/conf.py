"""Sphinx configuration for the clustrix documentation (Markdown pages through MyST, furo theme).

autodoc imports the installed distributions: build through ``nox -s docs``, which
installs every clustrix distribution first.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
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
# Headings of levels 1-3 get GitHub-style anchors (`## 7. Test it` -> `#7-test-it`), the
# same on GitHub and here; _check_heading_anchors makes a link to any other id a warning.
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


#: (document, line, target document, anchor) of every link to an anchor, by the document it is in.
_AnchorLinks = dict[str, list[tuple[str, int, str, str]]]


def _anchor_links(env: BuildEnvironment) -> _AnchorLinks:
    if not hasattr(env, "clustrix_anchor_links"):
        env.clustrix_anchor_links = {}  # type: ignore[attr-defined]
    links: _AnchorLinks = env.clustrix_anchor_links  # type: ignore[attr-defined]
    return links


def _line(node: nodes.Node) -> int:
    while node is not None and node.line is None:
        node = node.parent
    return node.line if node is not None and node.line is not None else 0


def _collect_anchor_links(app: Sphinx, doctree: nodes.document) -> None:
    """Record the links to ``page.md#anchor`` and the ``#anchor`` links MyST resolved only by a docutils id.

    MyST resolves ``#test-it`` silently when the heading ``## 7. Test it`` has that
    docutils id, although its heading anchor (the one GitHub shows too) is ``#7-test-it``.
    """
    docname = app.env.docname
    links = _anchor_links(app.env).setdefault(docname, [])
    for node in doctree.findall(addnodes.pending_xref):
        if node.get("reftype") != "myst":
            continue
        if node.get("refdomain") == "doc" and node.get("reftargetid"):
            links.append((docname, _line(node), node["reftarget"], node["reftargetid"]))
        elif node.get("reflocalid"):
            links.append((docname, _line(node), docname, node["reftarget"]))


def _purge_anchor_links(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    _anchor_links(env).pop(docname, None)


def _merge_anchor_links(app: Sphinx, env: BuildEnvironment, docnames: set[str], other: BuildEnvironment) -> None:
    _anchor_links(env).update({name: _anchor_links(other).get(name, []) for name in docnames})


def _check_heading_anchors(app: Sphinx, env: BuildEnvironment) -> None:
    """Warn (an error under -W) for a link to an anchor that is neither a heading anchor nor a label."""
    labels = env.domaindata.get("std", {}).get("labels", {})
    for links in _anchor_links(env).values():
        for docname, line, target, anchor in links:
            if target not in env.all_docs:
                continue  # MyST reports an unknown document itself
            if anchor in env.metadata[target].get("myst_slugs", {}) or anchor in labels:
                continue
            known = ", ".join(sorted(env.metadata[target].get("myst_slugs", {}))) or "none"
            _log.warning(
                f"link to #{anchor} in {target!r}: no heading there has that anchor (headings of levels 1-3 "
                f"have GitHub-style anchors: {known})",
                location=(docname, line),
            )


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("source-read", _drop_unwritten_pages)
    app.connect("doctree-read", _collect_anchor_links)
    app.connect("env-purge-doc", _purge_anchor_links)
    app.connect("env-merge-info", _merge_anchor_links)
    app.connect("env-check-consistency", _check_heading_anchors)
    return {"parallel_read_safe": True}
