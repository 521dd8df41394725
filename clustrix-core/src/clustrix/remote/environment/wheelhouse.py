"""Wheels for a remote side that reaches no package index: downloaded here, shipped once per file hash.

When the remote ``python3`` cannot reach an index (:mod:`~clustrix.remote.environment.target`),
clustrix runs ``pip download --no-deps --only-binary=:all:`` here, with the remote Python's
``--platform``/``--python-version``/``--implementation``/``--abi`` and this side's index settings
(``pip_index_url``, ``pip_extra_index_url``, ``pip_trusted_host``, else pip's own configuration),
into ``<user cache dir>/clustrix/downloads/<target>`` (private, reused: a wheel found there is not
asked for again). The remote side keeps every wheel it was sent in
``<remote_work_dir>/wheelhouse/<sha256>/<file>``, shared by all of the user's environments there,
so a wheel travels to a host once. A distribution with no wheel for the remote platform is
refused here, before anything is submitted (:class:`~clustrix.errors.NoWheelError`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import posixpath
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from clustrix.errors import EnvironmentBuildError, NoWheelError
from clustrix.remote.environment.capture import normalize_name
from clustrix.remote.environment.target import Target, wheel_name_version
from clustrix.remote.environment.wheels import private_cache_dir

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig

#: The remote wheel cache, below ``remote_work_dir``.
WHEELHOUSE = "wheelhouse"


@attrs.frozen
class IndexWheel:
    """A wheel downloaded here for the remote side: its file and sha256."""

    path: Path
    sha256: str

    def remote_path(self, work_dir: str) -> str:
        """Where the wheel is kept on the remote side: ``<work_dir>/wheelhouse/<sha256>/<file name>``."""
        return posixpath.join(work_dir, WHEELHOUSE, self.sha256, self.path.name)


_hash_lock = threading.Lock()
_hashes: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """The sha256 of ``path`` (remembered per path, size and mtime)."""
    info = path.stat()
    key = (str(path), info.st_size, info.st_mtime_ns)
    with _hash_lock:
        known = _hashes.get(key)
    if known is None:
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        known = digest.hexdigest()
        with _hash_lock:
            _hashes[key] = known
    return known


def _listed(config: ClusterConfig | Mapping[str, Any], key: str) -> list[str]:
    value = config.get(key) or []
    return value.split() if isinstance(value, str) else [str(v) for v in value]


def index_environment(config: ClusterConfig | Mapping[str, Any]) -> dict[str, str]:
    """``pip_index_url``, ``pip_extra_index_url`` and ``pip_trusted_host`` as the variables pip and uv read.

    Empty when none is set (pip's own configuration applies). Used here for ``pip download``
    and there for a build from the index.
    """
    found: dict[str, str] = {}
    if config.get("pip_index_url"):
        found["PIP_INDEX_URL"] = found["UV_INDEX_URL"] = str(config.get("pip_index_url"))
    if extra := _listed(config, "pip_extra_index_url"):
        found["PIP_EXTRA_INDEX_URL"] = found["UV_EXTRA_INDEX_URL"] = " ".join(extra)
    if hosts := _listed(config, "pip_trusted_host"):
        found["PIP_TRUSTED_HOST"] = found["UV_INSECURE_HOST"] = " ".join(hosts)
    return found


_REFUSED = re.compile(
    r"(?:No matching distribution found for|Could not find a version that satisfies the requirement)\s+(\S+)"
)


def _requirement_name(line: str) -> str:
    return normalize_name(re.split(r"[\s=<>!~;@\[]", line.strip(), maxsplit=1)[0])


def _version(text: str) -> str:
    return text.strip().lower().replace("-", "_")


def _found(folder: Path, target: Target, line: str) -> Path | None:
    """A wheel for ``line`` (``name==version``) already downloaded into ``folder`` for ``target``."""
    if "@" in line:  # a wheel named by its URL: pip keeps its file name
        path = folder / line.rstrip().rsplit("/", 1)[-1].split("#")[0]
        return path if path.suffix == ".whl" and path.is_file() and target.accepts(path.name) else None
    if "==" not in line:
        return None
    name, version = _requirement_name(line), _version(line.split("==", 1)[1])
    for path in sorted(folder.glob("*.whl")):
        found = wheel_name_version(path.name)
        if found and found[0] == name and _version(found[1]) == version and target.accepts(path.name):
            return path
    return None


_download_lock = threading.Lock()


def pip_here() -> list[str]:
    """The pip that downloads the remote side's wheels: this Python's own, else one on ``PATH`` (any
    pip downloads for another platform, the tags being given); a venv made by uv has none of its own."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        if found := shutil.which(name):
            return [found]
    raise EnvironmentBuildError(
        "the cluster reaches no package index, so clustrix downloads its wheels here, but this Python has "
        "no pip and none is on PATH: install it (`python -m ensurepip`, or `uv pip install pip`), or give "
        "the cluster a prepared python_executable"
    )


def download_wheels(
    requirement_lines: Sequence[str], target: Target, config: ClusterConfig | Mapping[str, Any], *, host: str
) -> tuple[list[IndexWheel], list[str]]:
    """One wheel per requirement for ``target``, downloaded here (or found from an earlier download).

    Returns the wheels and the requirements that have no wheel for the remote platform (the
    caller raises :func:`no_wheel_error` for them, before anything is submitted).
    """
    folder = private_cache_dir("downloads") / target.key
    folder.mkdir(mode=0o700, exist_ok=True)
    with _download_lock:
        found = {line: _found(folder, target, line) for line in requirement_lines}
        # a VCS commit or a source archive must be built, which only the remote side can do for its platform
        refused = {line: "" for line in requirement_lines if "@" in line and not line.rstrip().endswith(".whl")}
        todo = [line for line, path in found.items() if path is None and line not in refused]
        while todo:
            argv = [
                *pip_here(), "download", "--no-deps", "--only-binary=:all:", "--quiet",
                "--disable-pip-version-check", "--progress-bar", "off", *target.pip_options(),
                "-d", str(folder), *todo,
            ]  # fmt: skip
            # the index keys go in pip's environment, not its arguments: an index URL may hold a password
            variables = {k: v for k, v in index_environment(config).items() if k.startswith("PIP_")}
            env = {**os.environ, **variables}
            proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
            if proc.returncode == 0:
                break
            names = {_requirement_name(m) for m in _REFUSED.findall(proc.stderr)}
            failed = [line for line in todo if _requirement_name(line) in names]
            if not failed:
                raise EnvironmentBuildError(
                    f"downloading the wheels {host} needs (it reaches no package index) failed here:\n"
                    f"{proc.stderr.strip()[-3000:]}"
                )
            refused.update((line, proc.stderr) for line in failed)
            todo = [line for line in todo if line not in failed]
        wheels = []
        for line, path in found.items():
            path = path or _found(folder, target, line)
            if path is None:  # refused, or pip found no wheel this Python takes
                refused.setdefault(line, "")
                continue
            wheels.append(IndexWheel(path=path, sha256=file_sha256(path)))
    return wheels, list(refused)


def no_wheel_error(lines: Sequence[str], target: Target, host: str, *, local: Sequence[str] = ()) -> NoWheelError:
    """The error naming the distributions that have no wheel for ``target``, and the fixes."""
    named = [*lines, *(f"{name} (built here, a wheel for this machine only)" for name in local)]
    return NoWheelError(
        f"{host} reaches no package index (remote_index), so clustrix ships wheels from here, and these "
        f"distributions have no wheel for the remote Python ({target.implementation}{target.python_version}, "
        f"{target.platforms[0]}): {', '.join(named)}. Nothing was submitted. Fixes: build a wheel of each on the "
        "cluster (pip wheel NAME==VERSION there) and install it into a Python you name with python_executable=, or "
        "load a Python that has them with module_loads= / conda_env_name=; or leave them out of the replicated "
        "environment (replicate_distributions=) if the function does not need them; or set pip_index_url= to a "
        "mirror the cluster reaches, with remote_index='reachable'."
    )
