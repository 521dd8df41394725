"""Capture of the local environment: this interpreter's Python version and installed distributions.

The snapshot (from :func:`capture_environment`, also core's ``clustrix_capture_environment``
hookimpl, registered through the ``environment`` entry point) lists the interpreter's
major.minor and every installed distribution with its source: ``pypi`` (``name==version``),
``vcs`` (a pinned ``git+`` URL), ``url``, ``local`` or ``editable`` (installed from a path on
this machine). Everything here reads this machine only.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from clustrix.plugin.hookspecs import hookimpl

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig

#: The venv brings its own installer; pinning it would only slow the build.
NOT_REPLICATED = frozenset({"pip"})
_SKIP_DIRS = {
    ".git", ".hg", ".svn", "__pycache__", ".venv", "venv", "build", "dist", ".nox", ".tox",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis", "node_modules",
}  # fmt: skip


def normalize_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def direct_url(dist: importlib.metadata.Distribution) -> dict[str, Any] | None:
    """The distribution's ``direct_url.json`` (PEP 610: installed from a URL or a path), or None."""
    text = dist.read_text("direct_url.json")
    if not text:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def file_url_path(url: str) -> str | None:
    """The local path of a ``file:`` URL, else None."""
    parsed = urlparse(url)
    return unquote(parsed.path) if parsed.scheme == "file" else None


def tree_digest(path: Path) -> str:
    """A cheap fingerprint of a source tree: relative paths, sizes and mtimes (16 hex digits)."""
    digest = hashlib.sha256()
    if path.is_file():
        stat = path.stat()
        digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")):
                continue
            full = Path(root, name)
            try:
                stat = full.stat()
            except OSError:
                continue
            digest.update(f"{full.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def describe_distribution(dist: importlib.metadata.Distribution) -> dict[str, Any]:
    """One snapshot entry: name, version, source, and for local sources the path and digest."""
    name = normalize_name(dist.metadata["Name"] or "")
    entry: dict[str, Any] = {"name": name, "version": dist.version, "source": "pypi"}
    direct = direct_url(dist)
    if direct is None:
        return entry
    url = str(direct.get("url", ""))
    if "vcs_info" in direct:
        vcs = direct["vcs_info"]
        entry["source"] = "vcs"
        entry["requirement"] = f"{name} @ {vcs.get('vcs', 'git')}+{url}@{vcs.get('commit_id', '')}"
        return entry
    path = file_url_path(url)
    if path is None:  # an archive from an URL: pip can fetch it again
        entry["source"] = "url"
        entry["requirement"] = f"{name} @ {url}"
        return entry
    editable = bool(direct.get("dir_info", {}).get("editable"))
    entry["source"] = "editable" if editable else "local"
    entry["path"] = path
    entry["digest"] = tree_digest(Path(path)) if Path(path).exists() else "missing"
    return entry


def environment_hash(python: str, distributions: Iterable[Mapping[str, Any]]) -> str:
    """sha256 over the interpreter's major.minor and the sorted (name, version, source) list.

    Local digests are left out on purpose: editing a local project changes its overlay,
    not the venv.
    """
    items = sorted((d["name"], d["version"], d["source"], d.get("requirement", "")) for d in distributions)
    return hashlib.sha256(json.dumps([python, items]).encode()).hexdigest()


def _requirement_names(dist: importlib.metadata.Distribution) -> list[str]:
    """Names a distribution depends on, leaving out those needed only for extras."""
    names = []
    for line in dist.requires or []:
        if "extra ==" in line or "extra==" in line:
            continue
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if match:
            names.append(normalize_name(match.group(1)))
    return names


def _closure(installed: Mapping[str, importlib.metadata.Distribution], roots: Iterable[str]) -> set[str]:
    wanted: set[str] = set()
    todo = [normalize_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in wanted or name not in installed:
            continue
        wanted.add(name)
        todo.extend(_requirement_names(installed[name]))
    return wanted


def capture_environment(roots: Iterable[str] | None = None) -> dict[str, Any]:
    """The snapshot of this interpreter: Python version and its importable distributions.

    With ``roots``, only those distributions and what they require (transitively) are
    listed, e.g. ``["clustrix-core", "numpy"]`` for a function that needs only numpy;
    ``clustrix-core`` and ``cloudpickle`` are always included, as the remote runner needs them.
    """
    installed: dict[str, importlib.metadata.Distribution] = {}
    for dist in importlib.metadata.distributions():
        name = normalize_name(dist.metadata["Name"] or "")
        if name and name not in installed:
            installed[name] = dist
    keep = None if roots is None else _closure(installed, [*roots, "clustrix-core", "cloudpickle"])
    distributions = []
    for name, dist in sorted(installed.items()):
        if name in NOT_REPLICATED or (keep is not None and name not in keep):
            continue
        try:
            distributions.append(describe_distribution(dist))
        except Exception:  # noqa: BLE001 - one broken metadata dir must not stop the capture
            continue
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return {
        "python": python,
        "python_full": sys.version.split()[0],
        "distributions": distributions,
        "hash": environment_hash(python, distributions),
    }


@hookimpl(tryfirst=True)  # called first, so its keys win (see clustrix.plugin.manager.capture_environment)
def clustrix_capture_environment(config: ClusterConfig) -> dict[str, Any] | None:
    """Core's contribution to the snapshot: Python and pip distributions.

    ``replicate_distributions`` (a list of names), when configured, limits the snapshot
    to those distributions and their requirements.
    """
    roots = config.get("replicate_distributions") if hasattr(config, "get") else None
    return capture_environment(roots)
