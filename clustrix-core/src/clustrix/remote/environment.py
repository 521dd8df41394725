"""Environment replication: capture the local Python environment, rebuild it once per hash remotely.

The snapshot (from :func:`capture_environment`, also the core
``clustrix_capture_environment`` hookimpl) lists the interpreter's major.minor and every
installed distribution with its source: ``pypi`` (``name==version``), ``vcs`` (a pinned
``git+`` URL), ``local`` or ``editable`` (installed from a path on this machine).

On the remote side (an SSH host, or a batch scheduler's login node), one venv is built
per environment key under ``<remote_work_dir>/envs/<key>`` from the pinned requirements,
with uv when the remote has it, else ``python3 -m venv`` + pip, under a lock, and reused
from then on (a marker file is written last). Distributions installed from a local path
(not editable) are built into wheels here, shipped to ``<remote_work_dir>/wheels/`` and
unpacked into ``<remote_work_dir>/local/<name>-<digest>``, which jobs put first on
``PYTHONPATH``. Editable installs (``pip install -e .``) are never installed remotely: their
source travels as the user's own code (:mod:`clustrix.remote.localcode`), and their requirements
are pinned in the venv like any other distribution's.

The functions that render shell scripts are pure, so schedulers other than ``ssh`` (a
SLURM login node) run the same scripts through their own transport.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import posixpath
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import attrs
import platformdirs

from clustrix.errors import ConfigurationError, EnvironmentBuildError, PythonVersionMismatchError
from clustrix.log import get_logger
from clustrix.plugin.hookspecs import hookimpl
from clustrix.remote import scripts as remote_script

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig
    from clustrix.plugin.transport import Transport

log = get_logger("clustrix.remote.environment")

#: The venv brings its own installer; pinning it would only slow the build.
NOT_REPLICATED = frozenset({"pip"})
READY_MARKER = ".clustrix-ready"
MISMATCH_EXIT = 42
BUILD_FAILED_EXIT = 43
#: The build script's exit status when local wheels must be sent (see :func:`render_build_script`).
NEED_WHEELS_EXIT = 45
_SKIP_DIRS = {
    ".git", ".hg", ".svn", "__pycache__", ".venv", "venv", "build", "dist", ".nox", ".tox",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis", "node_modules",
}  # fmt: skip


# ---------------------------------------------------------------------------
# capture (local)
# ---------------------------------------------------------------------------


def normalize_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _direct_url(dist: importlib.metadata.Distribution) -> dict[str, Any] | None:
    text = dist.read_text("direct_url.json")
    if not text:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _file_path(url: str) -> str | None:
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
    direct = _direct_url(dist)
    if direct is None:
        return entry
    url = str(direct.get("url", ""))
    if "vcs_info" in direct:
        vcs = direct["vcs_info"]
        entry["source"] = "vcs"
        entry["requirement"] = f"{name} @ {vcs.get('vcs', 'git')}+{url}@{vcs.get('commit_id', '')}"
        return entry
    path = _file_path(url)
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


# ---------------------------------------------------------------------------
# rendering (pure)
# ---------------------------------------------------------------------------


def check_variable_name(name: str, what: str = "environment variable name") -> str:
    """Return ``name`` if it is a valid shell variable name, else raise ``ConfigurationError`` naming it."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ConfigurationError(f"{what} {name!r} is not a valid variable name: use letters, digits and '_'")
    return name


def activation_lines(
    *,
    module_loads: Sequence[str] = (),
    conda_env_name: str | None = None,
    pre_execution_commands: Sequence[str] = (),
    environment_variables: Mapping[str, str] | None = None,
) -> list[str]:
    """Shell lines that prepare a job's shell: modules, conda, the user's commands, variables.

    Module and conda names and every variable value are quoted; ``pre_execution_commands``
    are the user's own shell code and are used as written.
    """
    for line in pre_execution_commands:
        if "\n" in line:
            raise ConfigurationError(f"{line!r} spans several lines: give one command per list item")
    lines = [f"module load {shlex.quote(name)}" for name in module_loads]
    if conda_env_name:
        lines.append('. "$(conda info --base)/etc/profile.d/conda.sh"')
        lines.append(f"conda activate {shlex.quote(conda_env_name)}")
    lines.extend(pre_execution_commands)
    lines.extend(variable_exports(environment_variables or {}))
    return lines


#: The file in the job directory that holds the values of ``environment_variables`` (0600,
#: staged with the job): job scripts source it, so no value is ever in a script a scheduler
#: copies to its spool, nor in a process's arguments.
VARIABLES_FILE = "variables.sh"


def variable_exports(variables: Mapping[str, str]) -> list[str]:
    """``export NAME='value'`` lines for ``variables`` (names checked, values quoted)."""
    return [
        f"export {check_variable_name(key, 'environment_variables key')}={shlex.quote(str(value))}"
        for key, value in variables.items()
    ]


def source_variables_line(job_dir: str) -> str:
    """The prelude line that loads the job's :data:`VARIABLES_FILE` from ``job_dir``."""
    return f". {shlex.quote(posixpath.join(job_dir, VARIABLES_FILE))}"


def activation_from_config(config: ClusterConfig | Mapping[str, Any]) -> list[str]:
    get = config.get
    return activation_lines(
        module_loads=get("module_loads") or (),
        conda_env_name=get("conda_env_name"),
        pre_execution_commands=get("pre_execution_commands") or (),
        environment_variables=get("environment_variables") or {},
    )


def base_selection(config: ClusterConfig | Mapping[str, Any]) -> list[str]:
    """The activation lines that can change which ``python3`` builds the venv (not plain variables)."""
    return activation_lines(
        module_loads=config.get("module_loads") or (),
        conda_env_name=config.get("conda_env_name"),
        pre_execution_commands=config.get("pre_execution_commands") or (),
    )


def environment_key(snapshot: Mapping[str, Any], base_lines: Sequence[str]) -> str:
    """The venv's directory name: the snapshot hash plus what chose the base interpreter.

    ``environment_variables`` are left out: changing one must not rebuild the venv.
    """
    text = json.dumps([snapshot.get("hash", ""), list(base_lines)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def requirements(snapshot: Mapping[str, Any]) -> list[str]:
    """The pinned requirement lines the venv is built from (local sources are overlays)."""
    lines = []
    for dist in snapshot.get("distributions", []):
        if dist["source"] == "pypi":
            lines.append(f"{dist['name']}=={dist['version']}")
        elif dist["source"] in {"vcs", "url"}:
            lines.append(dist["requirement"])
    return lines


def render_version_check(python: str, expected: str | None, *, allow_mismatch: bool) -> str:
    """Shell that exits ``MISMATCH_EXIT`` naming both versions if ``python`` is not ``expected``."""
    if not expected or allow_mismatch:
        return (
            f"command -v {python} >/dev/null 2>&1 || "
            f"{{ printf 'clustrix-env: no %s on PATH\\n' {python} >&2; exit {BUILD_FAILED_EXIT}; }}"
        )
    probe = shlex.quote("import sys; print('%d.%d' % sys.version_info[:2])")
    return "\n".join(
        [
            f"remote_version=$({python} -I -c {probe} 2>/dev/null) || remote_version=none",
            f'if [ "$remote_version" != {shlex.quote(expected)} ]; then',
            "  printf 'clustrix-env: python-mismatch remote=%s local=%s python=%s\\n' "
            f'"$remote_version" {shlex.quote(expected)} {python} >&2',
            f"  exit {MISMATCH_EXIT}",
            "fi",
        ]
    )


#: What a job's Python must import: the runner (``python -m clustrix.remote.runner``) and cloudpickle,
#: which loads the pickled call. A plugin that ships the runner file needs only cloudpickle.
RUNNER_MODULES = ("clustrix.remote.runner", "cloudpickle")

#: The first statement of every ``python -c`` clustrix runs where ``-I`` cannot be used (the code
#: must import from the job's own ``PYTHONPATH``): ``-c`` puts the current directory first on
#: ``sys.path``, and Python 3.10 has no ``-P``. ``sys`` is built in, so nothing is imported before it.
SAFE_SYS_PATH = 'import sys; sys.path[:] = [p for p in sys.path if p not in ("", ".")]'


def render_import_check(python: str, modules: Sequence[str] = RUNNER_MODULES) -> str:
    """Shell that exits ``BUILD_FAILED_EXIT``, naming ``python`` and its error, if it cannot import ``modules``."""
    return (
        f"import_error=$({python} -c {shlex.quote(SAFE_SYS_PATH + '; import ' + ', '.join(modules))} 2>&1 >/dev/null) "
        "|| "
        f"{{ printf 'clustrix-env: cannot-import python=%s\\n%s\\n' {python} \"$import_error\" >&2; "
        f"exit {BUILD_FAILED_EXIT}; }}"
    )


def render_build_script(
    *,
    work_dir: str,
    key: str,
    requirement_lines: Sequence[str],
    python_version: str | None,
    activation: Sequence[str] = (),
    base_python: str = "python3",
    allow_mismatch: bool = False,
    overlays: Sequence[tuple[str, str]] = (),
    shipped: Sequence[tuple[str, int]] = (),
) -> str:
    """The POSIX sh script that makes ``<work_dir>/envs/<key>`` exist and be complete.

    ``work_dir`` must be absolute (expanded). Before anything is written or run, the work
    dir and every directory used below it is checked (see :mod:`clustrix.remote.scripts`).
    ``shipped`` are (remote wheel path, size) pairs whose bytes follow the script on stdin,
    in order. ``overlays`` are (remote wheel path, target dir) pairs unpacked with the
    venv's Python if the target is missing; a wheel that is needed but neither shipped nor
    there makes the script print ``clustrix-env: need-wheel LABEL`` lines and exit
    :data:`NEED_WHEELS_EXIT` before building anything. Prints ``clustrix-env: ready PATH``
    with the venv's python on success.
    """
    q = shlex.quote
    envs = posixpath.join(work_dir, "envs")
    env_dir = posixpath.join(envs, key)
    py = q(base_python)
    subdirs = [envs]
    if overlays:
        subdirs += [posixpath.join(work_dir, "wheels"), posixpath.join(work_dir, "local")]
    lines = [remote_script.CHECK_FUNCTIONS, *remote_script.render_work_dir_check(work_dir, subdirs)]
    existing = [env_dir] + [p for wheel, target in overlays for p in (posixpath.dirname(wheel), target)]
    lines.append("cx_existing " + " ".join(q(p) for p in existing))
    for wheel, size in shipped:
        lines.append(f"cx_mkdir {q(posixpath.dirname(wheel))}")
        lines.append(remote_script.render_receive(wheel, size))
    lines += [
        "exec </dev/null",  # the rest (module, conda, the user's commands) must not read the data
        *activation,
        render_version_check(py, python_version, allow_mismatch=allow_mismatch),
    ]
    if overlays:
        lines.append('need=""')
        for wheel, target in overlays:
            label = posixpath.basename(posixpath.dirname(wheel))
            lines.append(
                f"[ -f {q(posixpath.join(target, READY_MARKER))} ] || [ -f {q(wheel)} ] || "
                f"{{ echo {q('clustrix-env: need-wheel ' + label)}; need=1; }}"
            )
        lines.append(f'[ -z "$need" ] || exit {NEED_WHEELS_EXIT}')
    lines += [
        f"env_dir={q(env_dir)}",
        'lock="$env_dir.lock"',
        'log="$env_dir.log"',
        f'if [ ! -f "$env_dir/{READY_MARKER}" ]; then',
        '  me="$(hostname):$$"; waited=0',
        '  until mkdir "$lock" 2>/dev/null; do',
        '    holder=$(cat "$lock/owner" 2>/dev/null || echo "")',
        '    case "$holder" in',
        '      "$(hostname)":*) kill -0 "${holder##*:}" 2>/dev/null || { rm -rf "$lock"; continue; } ;;',
        "    esac",
        "    waited=$((waited + 1))",
        '    [ "$waited" -gt 3600 ] && {',
        '      echo "clustrix-env: gave up waiting for $lock (held by $holder)" >&2',
        f"      exit {BUILD_FAILED_EXIT}",
        "    }",
        "    sleep 1",
        "  done",
        '  echo "$me" > "$lock/owner"',
        "  trap 'rm -rf \"$lock\"' EXIT",
        f'  if [ ! -f "$env_dir/{READY_MARKER}" ]; then',
        '    rm -rf "$env_dir"',
        '    printf "%s\\n" ' + " ".join(q(r) for r in requirement_lines) + ' > "$env_dir.requirements.txt"'
        if requirement_lines
        else '    : > "$env_dir.requirements.txt"',
        "    if command -v uv >/dev/null 2>&1; then",
        # uv reads uv.toml / pyproject.toml from the directory it runs in and every parent: only the user's own
        '      uv_config="${XDG_CONFIG_HOME:-$HOME/.config}/uv/uv.toml"',
        '      if [ -f "$uv_config" ]; then export UV_CONFIG_FILE="$uv_config"; else export UV_NO_CONFIG=1; fi',
        f'      {{ uv venv --quiet --python {py} "$env_dir" &&',
        '        uv pip install --quiet --no-deps --python "$env_dir/bin/python"'
        ' -r "$env_dir.requirements.txt"; } >"$log" 2>&1',
        "    else",
        f'      {{ {py} -I -m venv "$env_dir" &&',
        '        "$env_dir/bin/python" -I -m pip install --quiet --no-deps --disable-pip-version-check --no-input'
        ' -r "$env_dir.requirements.txt"; } >"$log" 2>&1',
        "    fi",
        "    status=$?",
        '    if [ "$status" -ne 0 ]; then',
        '      echo "clustrix-env: build-failed $env_dir" >&2; tail -n 40 "$log" >&2',
        f"      exit {BUILD_FAILED_EXIT}",
        "    fi",
        f'    date > "$env_dir/{READY_MARKER}"',
        '    echo "clustrix-env: built $env_dir"',
        "  fi",
        '  rm -rf "$lock"; trap - EXIT',
        "fi",
    ]
    for wheel, target in overlays:
        lines += [
            f"if [ ! -f {q(posixpath.join(target, READY_MARKER))} ]; then",
            f"  tmp={q(target)}.tmp.$$",
            f'  rm -rf "$tmp" && "$env_dir/bin/python" -I -m zipfile -e {q(wheel)} "$tmp" &&'
            f' date > "$tmp/{READY_MARKER}" && {{ [ -e {q(target)} ] || mv "$tmp" {q(target)}; rm -rf "$tmp"; }}',
            f"  [ -f {q(posixpath.join(target, READY_MARKER))} ] || {{",
            f"    printf 'clustrix-env: cannot unpack %s\\n' {q(wheel)} >&2; exit {BUILD_FAILED_EXIT}",
            "  }",
            "fi",
        ]
    lines.append('echo "clustrix-env: ready $env_dir/bin/python"')
    return "\n".join(lines) + "\n"


def pythonpath_line(paths: Sequence[str]) -> str | None:
    """``export PYTHONPATH=...`` putting ``paths`` (quoted) before any existing entries."""
    if not paths:
        return None
    joined = ":".join(shlex.quote(p) for p in paths)
    return f'export PYTHONPATH={joined}"${{PYTHONPATH:+:$PYTHONPATH}}"'


# ---------------------------------------------------------------------------
# local wheels (I/O on this machine)
# ---------------------------------------------------------------------------


@attrs.frozen
class LocalWheel:
    """A local or editable distribution built into a wheel, named by its source digest."""

    name: str
    digest: str
    path: Path

    @property
    def label(self) -> str:
        return f"{self.name}-{self.digest}"


_wheel_lock = threading.Lock()


def wheel_cache_dir() -> Path:
    """``<user cache dir>/clustrix/wheels``, private (0700) at both levels, created if missing.

    The wheels hold the user's own code. A level an older clustrix left 0755 is made 0700; one
    that is a link or another user's is refused.
    """
    root = Path(platformdirs.user_cache_dir("clustrix"))
    root.parent.mkdir(parents=True, exist_ok=True)  # the user's cache dir (~/.cache): not ours to change
    for directory in (root, root / "wheels"):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            info = directory.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                raise EnvironmentBuildError(
                    f"{directory} is not a directory of this user's (a link, a file or another user's): clustrix "
                    "keeps the wheels of local code there. Remove it and submit again."
                ) from None
            if info.st_mode & 0o077:
                directory.chmod(0o700)
    return root / "wheels"


def build_local_wheel(dist: Mapping[str, Any]) -> LocalWheel:
    """The wheel for a local/editable distribution, built once per source digest and cached."""
    name, digest, source = dist["name"], dist.get("digest", "missing"), Path(dist["path"])
    if not source.exists():
        raise EnvironmentBuildError(
            f"distribution {name!r} was installed from {source}, which no longer exists; "
            "reinstall it or uninstall it before submitting"
        )
    out = wheel_cache_dir() / f"{name}-{digest}"
    with _wheel_lock:
        existing = sorted(out.glob("*.whl")) if out.is_dir() else []
        if existing:
            return LocalWheel(name, digest, existing[0])
        if source.is_file() and source.suffix == ".whl":
            out.mkdir(mode=0o700, exist_ok=True)
            shutil.copy2(source, out / source.name)
            return LocalWheel(name, digest, out / source.name)
        tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=out.parent))  # 0700, renamed to ``out`` when built
        errors = []
        for isolation in (["--no-build-isolation"], []):
            argv = [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--quiet",
                *isolation,
                "-w",
                str(tmp),
                str(source),
            ]
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
            built = sorted(tmp.glob("*.whl"))
            if proc.returncode == 0 and built:
                shutil.rmtree(out, ignore_errors=True)
                tmp.rename(out)
                return LocalWheel(name, digest, out / built[0].name)
            errors.append(proc.stderr.strip()[-1500:])
        shutil.rmtree(tmp, ignore_errors=True)
        raise EnvironmentBuildError(
            f"distribution {name!r} is installed from {source} ({dist['source']}) and could not be built into a wheel "
            f"to ship to the remote side. Fix its packaging, or install it from an index. pip said:\n{errors[-1]}"
        )


def local_distributions(snapshot: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Distributions installed from a local path, shipped as wheels (editable ones travel as source)."""
    return [d for d in snapshot.get("distributions", []) if d["source"] == "local"]


# ---------------------------------------------------------------------------
# preparing a remote (I/O through a transport)
# ---------------------------------------------------------------------------


@attrs.frozen
class RemoteEnvironment:
    """How a job runs in the replicated environment: a python, and shell lines to run first.

    ``prelude`` holds no value of ``environment_variables``: those are in ``variables`` (never
    shown by ``repr``), written to the job's private :data:`VARIABLES_FILE` and sourced by the
    job at ``variables_at`` in its prelude (:meth:`job_prelude`): after the modules, conda and
    ``pre_execution_commands``, before the ``PYTHONPATH`` lines.
    """

    python: str
    prelude: tuple[str, ...] = ()
    built: bool = False  # True if this call built the venv (not merely found it)
    variables: tuple[tuple[str, str], ...] = attrs.field(default=(), repr=False)
    variables_at: int = 0

    def job_prelude(self, job_dir: str) -> tuple[str, ...]:
        """The prelude of a job in ``job_dir``: ``prelude`` with the variables file sourced in its place."""
        if not self.variables:
            return self.prelude
        at = self.variables_at
        return (*self.prelude[:at], source_variables_line(job_dir), *self.prelude[at:])

    def variables_file(self) -> bytes:
        """The text of the job's :data:`VARIABLES_FILE` (empty when there are no variables)."""
        return "".join(line + "\n" for line in variable_exports(dict(self.variables))).encode()


def job_environment(
    config: ClusterConfig | Mapping[str, Any], python: str, path_line: str | None = None, *, built: bool = False
) -> RemoteEnvironment:
    """The :class:`RemoteEnvironment` of ``config`` with ``python``: activation, then ``path_line``."""
    base = base_selection(config)
    variables = tuple((str(k), str(v)) for k, v in (config.get("environment_variables") or {}).items())
    prelude = (*base, path_line) if path_line else tuple(base)
    return RemoteEnvironment(python=python, prelude=prelude, built=built, variables=variables, variables_at=len(base))


_prepared: dict[tuple[Any, ...], RemoteEnvironment] = {}
_prepared_lock = threading.Lock()


def forget_prepared() -> None:
    """Forget which remotes were prepared in this process (tests)."""
    with _prepared_lock:
        _prepared.clear()


def _interpret_failure(stderr: str, expected: str | None, host: str) -> Exception:
    unsafe = remote_script.unsafe_from_stderr(stderr, host)
    if unsafe is not None:
        return unsafe
    if "clustrix-env: python-mismatch" in stderr:
        found = re.search(r"remote=(\S+) local=(\S+) python=(\S+)", stderr)
        remote, local, python = found.groups() if found else ("?", expected, "python3")
        return PythonVersionMismatchError(
            f"the remote {python} is Python {remote} but this Python is {local}: pickled functions and results may "
            f"not load across versions, so nothing was submitted. Point python_executable= at a Python {local} on "
            f"the remote side (or load one with module_loads= / conda_env_name=), or set allow_python_mismatch=True "
            f"to try anyway."
        )
    if "clustrix-env: cannot-import python=" in stderr:
        _, _, rest = stderr.partition("clustrix-env: cannot-import python=")
        python, _, error = rest.partition("\n")
        reason = error.strip().splitlines()[-1] if error.strip() else "no error text"
        version = importlib.metadata.version("clustrix-core")
        return EnvironmentBuildError(
            f"the remote Python {python} cannot run clustrix jobs ({reason}), so nothing was submitted. Install "
            f"clustrix-core in it (pip install 'clustrix-core=={version}'), or leave python_executable unset so "
            f"clustrix builds a venv replicating this environment."
        )
    return EnvironmentBuildError(f"building the remote environment failed:\n{stderr.strip()[-4000:]}")


def remote_python(transport: Transport, python_executable: str | None) -> str:
    """The interpreter a job runs: ``python_executable`` with a leading ``~`` expanded on the remote side."""
    return python_path(python_executable, transport.expand)


def python_path(python_executable: str | None, expand: Callable[[str], str]) -> str:
    """``python_executable`` (default ``python3``) with a leading ``~`` expanded by ``expand``."""
    python = python_executable or "python3"
    return expand(python) if python.startswith("~") else python


def venv_python(work_dir: str, key: str) -> str:
    """The python of the replicated venv ``key`` under ``work_dir`` (what the build script reports ready)."""
    return posixpath.join(work_dir, "envs", key, "bin", "python")


def overlay_dir(work_dir: str, dist: Mapping[str, Any]) -> str:
    """Where a local distribution's wheel is unpacked on the remote side (its label: name and source digest)."""
    return posixpath.join(work_dir, "local", f"{dist['name']}-{dist.get('digest', 'missing')}")


def planned_remote_environment(
    config: ClusterConfig, snapshot: Mapping[str, Any] | None, expand: Callable[[str], str]
) -> RemoteEnvironment:
    """What :func:`prepare_remote_environment` would return, worked out here without connecting (dry runs).

    ``expand`` stands in for the transport's ``~`` expansion. The venv is not built nor checked.
    """
    activation_from_config(config)  # bad variable names or commands: refused as a submit would
    explicit = config.get("python_executable")
    if explicit or not (snapshot or {}).get("distributions"):
        return job_environment(config, python_path(explicit, expand))
    work_dir = expand(config.get("remote_work_dir") or "~/.clustrix")
    key = environment_key(snapshot or {}, base_selection(config))
    path_line = pythonpath_line([overlay_dir(work_dir, d) for d in local_distributions(snapshot or {})])
    return job_environment(config, venv_python(work_dir, key), path_line)


def prepare_remote_environment(
    transport: Transport,
    config: ClusterConfig,
    snapshot: Mapping[str, Any] | None,
    *,
    needs: Sequence[str] = RUNNER_MODULES,
) -> RemoteEnvironment:
    """Make the replicated environment exist on ``transport``'s host; return how to use it.

    Runs at most one remote script per (host, environment, settings) in this process.
    With ``python_executable`` set, that interpreter is used as it is, after checking its
    version and that it imports the modules in ``needs``; with an empty snapshot,
    ``python3`` is (checked the same way).
    """
    activation = activation_from_config(config)
    expected = (snapshot or {}).get("python")
    allow = bool(config.get("allow_python_mismatch"))
    explicit = config.get("python_executable")
    locals_ = local_distributions(snapshot or {})
    cache_key = (
        transport.host,
        config.get("cluster_port"),
        config.get("username"),
        config.get("remote_work_dir"),
        explicit,
        tuple(activation),
        allow,
        (snapshot or {}).get("hash"),
        tuple((d["name"], d.get("digest")) for d in locals_),
        tuple(needs),
    )
    with _prepared_lock:
        if cache_key in _prepared:
            return _prepared[cache_key]

    if explicit or not (snapshot or {}).get("distributions"):
        python = remote_python(transport, explicit)
        quoted = shlex.quote(python)
        checks = [render_version_check(quoted, expected, allow_mismatch=allow), render_import_check(quoted, needs)]
        work_dir = transport.expand(config.get("remote_work_dir") or "~/.clustrix")
        # the checks run in the checked work dir (or /), never in the caller's (possibly shared) directory
        script = "\n".join(
            [remote_script.CHECK_FUNCTIONS, *remote_script.render_enter_work_dir(work_dir), *activation, *checks]
        )
        result = remote_script.run_script(transport, script)
        if not result.ok:
            raise _interpret_failure(result.stderr, expected, transport.host)
        prepared = job_environment(config, python)
    else:
        prepared = _build(transport, config, snapshot or {}, activation, expected, allow, locals_)
    with _prepared_lock:
        _prepared[cache_key] = prepared
    return prepared


def _build(
    transport: Transport,
    config: ClusterConfig,
    snapshot: Mapping[str, Any],
    activation: list[str],
    expected: str | None,
    allow: bool,
    locals_: list[Mapping[str, Any]],
) -> RemoteEnvironment:
    work_dir = transport.expand(config.get("remote_work_dir") or "~/.clustrix")
    key = environment_key(snapshot, base_selection(config))
    wheels = {}
    overlays: list[tuple[str, str]] = []
    for wheel in (build_local_wheel(d) for d in locals_):
        remote_wheel = posixpath.join(work_dir, "wheels", wheel.label, wheel.path.name)
        wheels[wheel.label] = (remote_wheel, wheel.path)
        overlays.append((remote_wheel, overlay_dir(work_dir, {"name": wheel.name, "digest": wheel.digest})))
    log.info(
        "clustrix.environment_check", host=transport.host, key=key, distributions=len(snapshot.get("distributions", []))
    )
    shipped: list[tuple[str, Path]] = []
    while True:
        script = render_build_script(
            work_dir=work_dir,
            key=key,
            requirement_lines=requirements(snapshot),
            python_version=expected,
            activation=activation,
            allow_mismatch=allow,
            overlays=overlays,
            shipped=[(remote, path.stat().st_size) for remote, path in shipped],
        )
        # the wheels go in the same command that checked the directories they are written to
        result = remote_script.run_script(transport, script, b"".join(path.read_bytes() for _, path in shipped))
        if result.returncode != NEED_WHEELS_EXIT or shipped:
            break
        lines = result.stdout.splitlines()
        needed = [line.split(" ", 2)[2] for line in lines if line.startswith("clustrix-env: need-wheel ")]
        shipped = [wheels[label] for label in needed if label in wheels]
        if not shipped:
            break
    if not result.ok:
        raise _interpret_failure(result.stderr, expected, transport.host)
    ready = [line for line in result.stdout.splitlines() if line.startswith("clustrix-env: ready ")]
    if not ready:
        raise EnvironmentBuildError(
            f"the environment script printed no ready line:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    path_line = pythonpath_line([target for _, target in overlays])
    built = "clustrix-env: built" in result.stdout
    return job_environment(config, ready[-1].split(" ", 2)[2], path_line, built=built)
