"""Wheels of the distributions installed here from a local path, built once per source digest (I/O here).

Editable installs (``pip install -e .``) are never installed remotely: their source travels as
the user's own code (:mod:`clustrix.remote.localcode`).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import platformdirs

from clustrix.errors import EnvironmentBuildError


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
    return private_cache_dir("wheels")


def private_cache_dir(name: str) -> Path:
    """``<user cache dir>/clustrix/<name>``, private (0700) at both levels, created if missing (see above)."""
    root = Path(platformdirs.user_cache_dir("clustrix"))
    root.parent.mkdir(parents=True, exist_ok=True)  # the user's cache dir (~/.cache): not ours to change
    for directory in (root, root / name):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            info = directory.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                raise EnvironmentBuildError(
                    f"{directory} is not a directory of this user's (a link, a file or another user's): clustrix "
                    "keeps wheels there. Remove it and submit again."
                ) from None
            if info.st_mode & 0o077:
                directory.chmod(0o700)
    return root / name


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
