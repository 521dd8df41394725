"""Detection: which modules a payload names, and which of them are the user's own code.

The payload is pickled once with a pickler that records every module named by reference
(functions and classes by reference, module objects) and every absolute ``import`` inside
code pickled by value (``import mylib`` in a function body). A name is *local* when its file
is neither in the standard library nor in an installed distribution (site-packages, the
interpreter's prefix, a ``pip install --target`` folder): the script's folder, a notebook's
folder, any folder on ``sys.path``, and the source tree of an editable install.
"""

from __future__ import annotations

import dis
import functools
import importlib.metadata
import importlib.util
import io
import os
import site
import sys
import sysconfig
import types
from pathlib import Path
from typing import Any

import attrs

from clustrix.remote import runner
from clustrix.remote.environment.capture import direct_url, file_url_path, normalize_name

_NEVER_SHIPPED = frozenset({"__main__", "__mp_main__", "builtins", "__builtin__"})


def imported_names(code: types.CodeType) -> set[str]:
    """The absolute module names ``code`` imports (``import a.b``, ``from a import b``), not nested code."""
    names: set[str] = set()
    level: Any = 0
    for instruction in dis.get_instructions(code):
        if instruction.opname == "IMPORT_NAME":
            if not level and instruction.argval:
                names.add(str(instruction.argval))
        elif instruction.opname in {"LOAD_CONST", "LOAD_SMALL_INT"}:
            level = instruction.argval if isinstance(instruction.argval, int) else 0
    return names


def _by_value(module_name: str) -> bool:
    check = getattr(sys.modules.get("cloudpickle.cloudpickle"), "_is_registered_pickle_by_value", None)
    module = sys.modules.get(module_name)
    return bool(check and module is not None and check(module))


_recording_class: Any = None


def _recorder() -> Any:
    """The payload pickler (:func:`clustrix.remote.runner.dumps`'s) that also records module names."""
    global _recording_class
    if _recording_class is None:
        base = runner._pickler()

        class Recording(base):  # type: ignore[misc, valid-type]
            referenced: set[str]

            def reducer_override(self, obj: Any) -> Any:
                result = super().reducer_override(obj)
                if isinstance(obj, types.CodeType):
                    self.referenced.update(imported_names(obj))
                elif result is NotImplemented:
                    name = None
                    if isinstance(obj, types.ModuleType):
                        name = obj.__name__ if not _by_value(obj.__name__) else None
                    elif isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)):
                        name = getattr(obj, "__module__", None)
                    if isinstance(name, str):
                        self.referenced.add(name)
                return result

        _recording_class = Recording
    return _recording_class


def dumps_recording(obj: Any) -> tuple[bytes, frozenset[str]]:
    """``runner.dumps(obj)`` and the module names the pickle will import when loaded."""
    import pickle

    buffer = io.BytesIO()
    pickler = _recorder()(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.referenced = set()
    pickler.dump(obj)
    return buffer.getvalue(), frozenset(pickler.referenced)


# ---------------------------------------------------------------------------
# what is local
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _installed_roots() -> tuple[str, ...]:
    """Folders whose modules come from the interpreter or an installed distribution."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        roots.add(sysconfig.get_paths().get(key, ""))
    if hasattr(site, "getsitepackages"):
        roots.update(site.getsitepackages())
    user_site = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    if isinstance(user_site, str):
        roots.add(user_site)
    return tuple(sorted({os.path.realpath(r) for r in roots if r}))


def is_installed_path(path: str | os.PathLike[str]) -> bool:
    """True for a file of the standard library or of an installed (non-editable) distribution.

    Besides site-packages and the interpreter's own folders, a folder holding ``.dist-info``
    directories is an install target (``pip install --target DIR``, then ``PYTHONPATH=DIR``).
    """
    real = os.path.realpath(path)
    parts = Path(real).parts
    if "site-packages" in parts or "dist-packages" in parts:
        return True
    if any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in _installed_roots()):
        return True
    try:
        return any(name.endswith(".dist-info") for name in os.listdir(os.path.dirname(real)))
    except OSError:
        return False


@attrs.frozen
class Editable:
    """An editable install: its distribution, its project folder, its metadata files."""

    name: str
    version: str
    path: str
    metadata: tuple[tuple[str, bytes], ...]


@functools.lru_cache(maxsize=4)
def _editables(path_key: tuple[str, ...]) -> tuple[Editable, ...]:
    found: dict[str, Editable] = {}
    for dist in importlib.metadata.distributions():
        direct = direct_url(dist)
        if not direct or not direct.get("dir_info", {}).get("editable"):
            continue
        path = file_url_path(str(direct.get("url", "")))
        name = normalize_name(dist.metadata["Name"] or "")
        if not path or not name or name in found:
            continue
        files = []
        for file in ("METADATA", "entry_points.txt", "top_level.txt"):
            text = dist.read_text(file)
            if text is not None:
                files.append((file, text.encode()))
        found[name] = Editable(name, dist.version, os.path.realpath(path), tuple(files))
    return tuple(found.values())


def editable_installs() -> tuple[Editable, ...]:
    """The editable installs visible to this interpreter (cached per ``sys.path``)."""
    return _editables(tuple(sys.path))


def editable_for(path: str) -> Editable | None:
    real = os.path.realpath(path)
    best = None
    for editable in editable_installs():
        if real.startswith(editable.path.rstrip(os.sep) + os.sep) and (
            best is None or len(editable.path) > len(best.path)
        ):
            best = editable
    return best


@attrs.frozen
class Origin:
    """Where a top-level name is found here: its module file, or its package folder(s)."""

    name: str
    paths: tuple[str, ...]
    package: bool


def locate(top: str) -> Origin | None:
    """The local origin of top-level module ``top``, or None if it is installed, built in or missing."""
    if top in _NEVER_SHIPPED:
        return None
    module = sys.modules.get(top)
    if module is not None:
        file = getattr(module, "__file__", None)
        search = getattr(module, "__path__", None)
    else:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        file = spec.origin if spec.has_location else None
        search = spec.submodule_search_locations
    if search is not None:
        paths = [os.path.dirname(file)] if file else list(search)
    elif file:
        paths = [file]
    else:
        return None
    local = tuple(os.path.realpath(p) for p in paths if p and os.path.exists(p) and not is_installed_path(p))
    if not local:
        return None
    return Origin(top, local, search is not None)
