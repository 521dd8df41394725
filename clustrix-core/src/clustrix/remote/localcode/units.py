"""Units: a local top-level module or package as it travels (its files, content hash and size), and their archive.

A unit is the module file, or the whole package folder (so relative imports and data files
work), plus the metadata of the editable install it comes from, if any; it is refused when it
holds a compiled extension built here or is larger than ``max_module_size``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.machinery
import io
import os
import posixpath
import sys
import tarfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from clustrix.errors import LocalCodeError
from clustrix.remote.localcode.detection import Origin, editable_for

#: Folders never shipped inside a package (caches, version control, virtual environments).
SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", "__pycache__", ".venv", "venv", ".nox", ".tox", ".mypy_cache", ".pytest_cache",
     ".ruff_cache", ".hypothesis", "node_modules", ".ipynb_checkpoints"}
)  # fmt: skip


@attrs.frozen
class CodeUnit:
    """One top-level module or package as it will exist remotely: ``<label>/<files>``."""

    name: str
    digest: str
    size: int
    source: str
    distribution: str | None
    files: tuple[tuple[str, str | bytes], ...] = attrs.field(repr=False, eq=False)

    @property
    def label(self) -> str:
        return f"{self.name}-{self.digest}"


def _walk(origin: Origin) -> list[tuple[str, str]]:
    """(name inside the unit, local path) for every file of ``origin``."""
    if not origin.package:
        return [(os.path.basename(origin.paths[0]), origin.paths[0])]
    files: dict[str, str] = {}
    for top in origin.paths:
        for root, dirs, names in os.walk(top):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
            for name in sorted(names):
                if name.endswith((".pyc", ".pyo")):
                    continue
                full = os.path.join(root, name)
                if os.path.isfile(full):
                    files.setdefault(posixpath.join(origin.name, *Path(full).relative_to(top).parts), full)
    return sorted(files.items())


def _compiled_submodule(origin: Origin) -> str | None:
    """The file of a compiled extension among ``origin``'s loaded modules, if any."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    if not origin.package and origin.paths[0].endswith(suffixes):
        return origin.paths[0]
    for name, module in list(sys.modules.items()):
        if name == origin.name or name.startswith(origin.name + "."):
            file = getattr(module, "__file__", None)
            if isinstance(file, str) and file.endswith(suffixes):
                return file
    return None


def format_size(size: int) -> str:
    """``size`` bytes for a message: ``1.2 MB`` or ``3.4 kB``."""
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


_units_lock = threading.Lock()
_units: dict[tuple[Any, ...], CodeUnit] = {}


def make_unit(origin: Origin, *, limit: int) -> CodeUnit:
    """The unit for ``origin``, refusing a compiled extension or more than ``limit`` bytes."""
    compiled = _compiled_submodule(origin)
    if compiled is not None:
        raise LocalCodeError(
            f"module {origin.name!r} is local code with a compiled extension built on this machine ({compiled}), "
            "which cannot travel with the call. Install it on the remote side (pip install it into the remote "
            "environment, or set python_executable= to a Python that has it) and add "
            f"exclude_modules=[{origin.name!r}] so clustrix stops shipping it."
        )
    walked = _walk(origin)
    stats = []
    for _arcname, path in walked:
        st = os.stat(path)
        stats.append((path, st.st_size, st.st_mtime_ns))
    size = sum(s for _, s, _ in stats)
    if size > limit:
        raise LocalCodeError(
            f"local module {origin.name!r} ({origin.paths[0]}) is {format_size(size)}, over "
            f"max_module_size={format_size(limit)}, so it was not shipped and nothing was submitted. Move large data "
            "files out of it (read them from a path on the cluster), raise max_module_size=, or install it on the "
            f"remote side and set exclude_modules=[{origin.name!r}]."
        )
    editable = editable_for(origin.paths[0])
    key = (origin, tuple(stats), editable)
    with _units_lock:
        known = _units.get(key)
    if known is not None:
        return known
    files: list[tuple[str, str | bytes]] = list(walked)
    if editable is not None:  # importlib.metadata.version(...) and entry points work remotely too
        info = f"{editable.name.replace('-', '_')}-{editable.version}.dist-info"
        files += [(posixpath.join(info, name), data) for name, data in editable.metadata]
    digest = hashlib.sha256()
    for arcname, content in files:
        data = content if isinstance(content, bytes) else Path(content).read_bytes()
        digest.update(f"{arcname}\0{len(data)}\0".encode())
        digest.update(data)
    unit = CodeUnit(
        name=origin.name,
        digest=digest.hexdigest()[:16],
        size=size,
        source=origin.paths[0],
        distribution=editable.name if editable else None,
        files=tuple(files),
    )
    with _units_lock:
        _units[key] = unit
    return unit


_imports: dict[tuple[str, str], frozenset[str]] = {}


def unit_imports(unit: CodeUnit) -> frozenset[str]:
    """Top-level names the unit's Python files import absolutely (the names other units may provide)."""
    known = _imports.get((unit.source, unit.digest))
    if known is None:
        known = _imports[(unit.source, unit.digest)] = frozenset(_parse_imports(unit))
    return known


def _parse_imports(unit: CodeUnit) -> set[str]:
    names: set[str] = set()
    for arcname, content in unit.files:
        if not arcname.endswith(".py") or isinstance(content, bytes):
            continue
        try:
            tree = ast.parse(Path(content).read_bytes(), filename=content)
        except (SyntaxError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.split(".")[0])
    return names


def archive(units: Iterable[CodeUnit]) -> bytes:
    """A reproducible ``tar.gz`` holding ``<label>/<file>`` for every unit (for any payload channel)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT, compresslevel=6) as tar:
        for unit in units:
            for arcname, content in unit.files:
                data = content if isinstance(content, bytes) else Path(content).read_bytes()
                info = tarfile.TarInfo(posixpath.join(unit.label, arcname))
                info.size, info.mode, info.mtime = len(data), 0o600, 0
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
