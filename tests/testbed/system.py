"""Shared helpers for the testbeds: installing Debian packages, free ports, waiting.

Every testbed module (sshd, slurm, ...) installs what it needs through
:func:`apt_install`, so a fresh machine needs no manual step. In CI (``CI=true``)
a testbed that cannot start must fail the run, never skip: use :func:`unavailable`.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable

import pytest

_LOCK = "/tmp/clustrix-testbed-apt.lock"
_updated = False


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> None:
    """A testbed cannot start: fail in CI, skip elsewhere."""
    if in_ci():
        pytest.fail(f"testbed unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"testbed unavailable: {reason}")


def missing_packages(packages: Iterable[str]) -> list[str]:
    missing = []
    for name in packages:
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True, check=False)
        if "install ok installed" not in proc.stdout:
            missing.append(name)
    return missing


def apt_install(packages: Iterable[str], *, preseed: str | None = None) -> None:
    """Install Debian packages that are missing (needs root); serialised across processes."""
    global _updated
    packages = list(packages)
    if shutil.which("dpkg-query") is None:
        raise RuntimeError("not a Debian system: cannot install " + " ".join(packages))
    if not missing_packages(packages):
        return
    if os.geteuid() != 0:
        raise RuntimeError("installing " + " ".join(packages) + " needs root (apt-get)")
    with open(_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = missing_packages(packages)
        if not missing:
            return
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if preseed:
            subprocess.run(["debconf-set-selections"], input=preseed, text=True, check=True, env=env)
        if not _updated:
            subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
            _updated = True
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            check=True,
            env=env,
            capture_output=True,
        )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` until it is true; raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} did not happen within {timeout} s")
