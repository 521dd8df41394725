"""Your own code travels with the call: find the local modules a job needs and ship their source.

A job's payload is cloudpickled. A ``@cluster`` function itself always travels by value,
but whatever it uses from the user's own modules (``from mylib import helper``, a class
from ``mypkg.models``, an argument whose class lives in a local file) is pickled *by
reference*: the remote side imports ``mylib`` again, and ``mylib`` exists only on the
machine that submitted. This module finds those modules and makes them exist remotely.

**Detection.** The payload is pickled once with a pickler that records every module
named by reference (functions and classes by reference, module objects) and every
absolute ``import`` inside code pickled by value (``import mylib`` in a function body).
A name is *local* when its file is neither in the standard library nor in an installed
distribution (site-packages, the interpreter's prefix, a ``pip install --target``
folder): the script's folder, a notebook's folder, any folder on ``sys.path``, and the
source tree of an editable install (``pip install -e .``). A local top-level name becomes a *unit*: the module file,
or the whole package folder (so relative imports and data files work); the local
modules a unit itself imports are added, transitively. ``ship_modules`` adds names the
detection cannot see (``importlib.import_module(name_from_a_string)``);
``exclude_modules`` names local modules the remote side already has.

**Why a source archive, not cloudpickle's ``register_pickle_by_value``.** By value, every
payload would carry the code again (a ``.map()`` of a large project, each submit), module
code would not run on import (registries, ``__init__`` side effects, module-level
constants built at import are copied as they are now, not rebuilt), classes would be
re-created per payload, relative imports inside a package would still go by reference,
and files inside a package (``importlib.resources.files(__package__)``, ``__file__``
neighbours) would not exist remotely. A unit shipped as its source files is imported
remotely exactly as here, tracebacks show the real source lines, and it is stored once
per content hash under ``<remote_work_dir>/code/<name>-<sha256[:16]>``, so an unchanged
project is never sent again (one probe command per process and host) and a changed file
is a new unit.

**Refusals**, before the job is submitted: a compiled extension module built here (it
would need the same platform and libraries), a unit larger than ``max_module_size``,
and a unit that fails to import with the remote Python (checked once per unit set,
python and host); each error names the module and the fix.

**The hook**: :func:`encode_payload` (or :func:`dumps_recording` + :func:`plan_code`)
where a backend pickles its payload, then :func:`ship` through the backend's transport;
the returned :class:`ShippedCode` has the ``PYTHONPATH`` line for the job's shell prelude
and the remote paths (for a backend that sets environment variables instead). A backend
without a shared filesystem can send :func:`archive` through its own payload channel.
"""

from __future__ import annotations

import ast
import dis
import functools
import hashlib
import importlib.machinery
import importlib.metadata
import importlib.util
import io
import os
import posixpath
import shlex
import site
import sys
import sysconfig
import tarfile
import threading
import types
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from clustrix.config.resources import parse_memory
from clustrix.errors import LocalCodeError
from clustrix.log import get_logger
from clustrix.remote import runner
from clustrix.remote import scripts as remote_script
from clustrix.remote.environment import (
    RUNNER_MODULES,
    SAFE_SYS_PATH,
    _direct_url,
    _file_path,
    normalize_name,
    pythonpath_line,
)

if TYPE_CHECKING:
    from clustrix.plugin.transport import Transport

log = get_logger("clustrix.remote.localcode")

#: The folder under ``remote_work_dir`` that holds shipped units, one sub-folder per content hash.
CODE_DIR = "code"
READY_MARKER = ".clustrix-ready"
DEFAULT_MAX_MODULE_SIZE = "20MB"
#: Folders never shipped inside a package (caches, version control, virtual environments).
SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", "__pycache__", ".venv", "venv", ".nox", ".tox", ".mypy_cache", ".pytest_cache",
     ".ruff_cache", ".hypothesis", "node_modules", ".ipynb_checkpoints"}
)  # fmt: skip
_NEVER_SHIPPED = frozenset({"__main__", "__mp_main__", "builtins", "__builtin__"})


# ---------------------------------------------------------------------------
# recording what the payload names
# ---------------------------------------------------------------------------


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
        direct = _direct_url(dist)
        if not direct or not direct.get("dir_info", {}).get("editable"):
            continue
        path = _file_path(str(direct.get("url", "")))
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


def _editable_for(path: str) -> Editable | None:
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


# ---------------------------------------------------------------------------
# units
# ---------------------------------------------------------------------------


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


def _format_size(size: int) -> str:
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
            f"local module {origin.name!r} ({origin.paths[0]}) is {_format_size(size)}, over "
            f"max_module_size={_format_size(limit)}, so it was not shipped and nothing was submitted. Move large data "
            "files out of it (read them from a path on the cluster), raise max_module_size=, or install it on the "
            f"remote side and set exclude_modules=[{origin.name!r}]."
        )
    editable = _editable_for(origin.paths[0])
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


# ---------------------------------------------------------------------------
# the plan: which units a job needs
# ---------------------------------------------------------------------------


@attrs.frozen
class CodePlan:
    """The units a job needs, and the modules the remote Python must import (checked before submit)."""

    units: tuple[CodeUnit, ...] = ()
    modules: tuple[str, ...] = ()


def _names(config: Any, key: str) -> list[str]:
    value = config.get(key) if config is not None else None
    if isinstance(value, str):
        value = [value]
    return [str(v) for v in value or ()]


def max_module_size(config: Any) -> int:
    value = (config.get("max_module_size") if config is not None else None) or DEFAULT_MAX_MODULE_SIZE
    return parse_memory(value, parameter="max_module_size")


def plan_code(referenced: Iterable[str], config: Any, *, needs: Sequence[str] = RUNNER_MODULES) -> CodePlan:
    """The local units behind ``referenced`` module names (plus ``needs`` and ``ship_modules``), transitively."""
    exclude = set(_names(config, "exclude_modules"))
    limit = max_module_size(config)
    explicit = _names(config, "ship_modules")
    for name in explicit:
        if locate(name.split(".")[0]) is None and name.split(".")[0] not in exclude:
            raise LocalCodeError(
                f"ship_modules lists {name!r}, which is not a local module here (it is installed, built in, or "
                "cannot be found on sys.path): remove it from ship_modules"
            )
    wanted = [*sorted(set(referenced)), *needs, *explicit]
    units: dict[str, CodeUnit] = {}
    todo = [name.split(".")[0] for name in wanted]
    seen: set[str] = set()
    while todo:
        top = todo.pop(0)
        if top in seen or top in exclude:
            continue
        seen.add(top)
        origin = locate(top)
        if origin is None:
            continue
        unit = make_unit(origin, limit=limit)
        units[top] = unit
        todo.extend(sorted(unit_imports(unit)))
    modules = sorted({name for name in wanted if name.split(".")[0] in units})
    return CodePlan(units=tuple(units[k] for k in sorted(units)), modules=tuple(modules))


# ---------------------------------------------------------------------------
# shipping (I/O through a transport)
# ---------------------------------------------------------------------------


@attrs.frozen
class ShippedCode:
    """Where a job's units are on the remote side, and what this submit had to send."""

    paths: tuple[str, ...] = ()
    sent: tuple[str, ...] = ()
    reused: tuple[str, ...] = ()

    @property
    def prelude(self) -> tuple[str, ...]:
        """The shell line that puts the units first on ``PYTHONPATH`` (none when nothing ships)."""
        line = pythonpath_line(self.paths)
        return (line,) if line else ()


#: The remote half, run by the job's own Python after the shell checked the work dir, the
#: code dir and every unit dir that exists (:mod:`clustrix.remote.scripts`), in the work dir,
#: with the current directory off ``sys.path`` before its first import: reports missing
#: units, unpacks units sent on stdin (each moved into place with one rename, so a
#: concurrent submit never sees half a unit), then imports the modules.
_REMOTE = (
    SAFE_SYS_PATH
    + r"""
import io, os, shutil, tarfile, traceback
code, mode = sys.argv[1], sys.argv[2]
sep = sys.argv.index("--")
labels, modules = sys.argv[3:sep], sys.argv[sep + 1:]
ready = lambda label: os.path.isfile(os.path.join(code, label, ".clustrix-ready"))
if mode == "unpack":
    tmp = os.path.join(code, ".incoming-%d" % os.getpid())
    os.mkdir(tmp, 0o700)
    with tarfile.open(fileobj=io.BytesIO(sys.stdin.buffer.read()), mode="r:gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tmp, filter="data")
        else:
            tar.extractall(tmp)
    for label in os.listdir(tmp):
        open(os.path.join(tmp, label, ".clustrix-ready"), "w").close()
        if not ready(label):
            try:
                os.rename(os.path.join(tmp, label), os.path.join(code, label))
            except OSError:
                if not ready(label):
                    raise
    shutil.rmtree(tmp, ignore_errors=True)
missing = [l for l in labels if not ready(l)]
for label in missing:
    print("clustrix-code: missing " + label)
if missing:
    sys.exit(0)
sys.path[:] = [os.path.join(code, l) for l in labels] + sys.path
for name in modules:
    try:
        __import__(name)
    except BaseException as exc:
        print("clustrix-code: import-failed " + name)
        print("".join(traceback.format_exception_only(type(exc), exc)).strip())
        print(traceback.format_exc()[-3000:])
        sys.exit(0)
print("clustrix-code: ok")
"""
)


def render_ship_script(
    *,
    python: str,
    work_dir: str,
    labels: Sequence[str],
    modules: Sequence[str],
    mode: str,
    prelude: Sequence[str],
) -> str:
    """The script (sent on stdin) that checks the dirs, then runs the remote half with the job's Python (pure).

    The work dir and ``code/`` are created ``0700`` or refused, an existing unit dir must be
    private too; then the job's prelude runs, so the Python is the job's own.
    """
    q = shlex.quote
    code_dir = posixpath.join(work_dir, CODE_DIR)
    units = [posixpath.join(code_dir, label) for label in labels]
    argv = [python, "-c", _REMOTE, code_dir, mode, *labels, "--", *modules]
    return "\n".join(
        [
            remote_script.CHECK_FUNCTIONS,
            *remote_script.render_work_dir_check(work_dir, [code_dir]),
            "cx_existing " + " ".join(q(u) for u in units),
            *prelude,
            " ".join(q(a) for a in argv),
            "",
        ]
    )


_shipped_lock = threading.Lock()
_shipped: set[tuple[Any, ...]] = set()


def forget_shipped() -> None:
    """Forget which units this process has seen on which remotes (tests; a new process does too)."""
    with _shipped_lock:
        _shipped.clear()


def _answer(stdout: str) -> tuple[list[str], str | None, str]:
    """(missing labels, failed module or None, status) from the remote half's output."""
    lines = stdout.splitlines()
    missing = [line.split(" ", 2)[2] for line in lines if line.startswith("clustrix-code: missing ")]
    for index, line in enumerate(lines):
        if line.startswith("clustrix-code: import-failed "):
            return missing, line.split(" ", 2)[2], "\n".join(lines[index + 1 :])
    return missing, None, "ok" if "clustrix-code: ok" in lines else ""


def planned(work_dir: str, plan: CodePlan) -> ShippedCode:
    """Where :func:`ship` puts ``plan``'s units under the (expanded) ``work_dir``; no I/O (dry runs use it too)."""
    code_dir = posixpath.join(work_dir, CODE_DIR)
    return ShippedCode(paths=tuple(posixpath.join(code_dir, unit.label) for unit in plan.units))


def ship(
    transport: Transport,
    config: Any,
    plan: CodePlan,
    *,
    python: str,
    prelude: Sequence[str] = (),
) -> ShippedCode:
    """Make ``plan``'s units exist under ``<remote_work_dir>/code`` and import with ``python``.

    Sends only units whose content hash the remote side lacks. One command when every
    unit is there already, two when some must be sent; none when this process already
    checked the same units with the same Python on the same host.
    """
    if not plan.units:
        return ShippedCode()
    work = transport.expand((config.get("remote_work_dir") if config is not None else None) or "~/.clustrix")
    code_dir = posixpath.join(work, CODE_DIR)
    labels = [unit.label for unit in plan.units]
    paths = planned(work, plan).paths
    key = (
        transport.host,
        getattr(config, "connection_key", None),
        code_dir,
        python,
        tuple(prelude),
        paths,
        plan.modules,
    )
    with _shipped_lock:
        known = key in _shipped
    if known:
        log.info("clustrix.code_shipped", host=transport.host, sent=[], reused=labels, checked="in this process")
        return ShippedCode(paths=paths, reused=tuple(labels))

    def run(mode: str, data: bytes) -> tuple[list[str], str | None, str, str]:
        script = render_ship_script(
            python=python, work_dir=work, labels=labels, modules=plan.modules, mode=mode, prelude=prelude
        )
        result = remote_script.run_script(transport, script, data, timeout=600)
        unsafe = remote_script.unsafe_from_stderr(result.stderr, transport.host)
        if unsafe is not None:
            raise unsafe
        missing, failed, status = _answer(result.stdout)
        return missing, failed, status, (result.stderr.strip() or result.stdout.strip())[-3000:]

    missing, failed, status, output = run("probe", b"")
    sent: list[str] = []
    if missing and failed is None:
        sent = missing
        missing, failed, status, output = run("unpack", archive(u for u in plan.units if u.label in set(missing)))
    if failed is not None:
        unit = next((u for u in plan.units if u.name == failed.split(".")[0]), None)
        where = f" ({unit.source})" if unit else ""
        reason = status.splitlines()[0] if status else "no error text"
        raise LocalCodeError(
            f"local module {failed!r}{where} was shipped to {transport.host} but does not import with the remote "
            f"Python {python}: {reason}. Nothing was submitted. Install what it needs on the remote side (add the "
            "distribution to replicate_distributions, or set python_executable= to a Python that has it), or, if the "
            f"remote side has its own copy of the module, set exclude_modules=[{failed.split('.')[0]!r}]."
            f"\n{status}"
        )
    if missing or status != "ok":
        raise LocalCodeError(f"shipping local code to {transport.host} failed:\n{output}")
    shipped = ShippedCode(paths=paths, sent=tuple(sent), reused=tuple(x for x in labels if x not in sent))
    log.info("clustrix.code_shipped", host=transport.host, sent=list(shipped.sent), reused=list(shipped.reused))
    with _shipped_lock:
        _shipped.add(key)
    return shipped


def describe(plan: CodePlan) -> list[Mapping[str, Any]]:
    """What ``plan`` ships, one dict per unit (for logs, the CLI and tests)."""
    return [
        {"name": u.name, "label": u.label, "size": u.size, "source": u.source, "distribution": u.distribution}
        for u in plan.units
    ]
