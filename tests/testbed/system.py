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
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

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


T = TypeVar("T")


def start_or_unavailable(what: str, start: Callable[[], T]) -> T:
    """``start()`` a testbed; when it cannot start, fail in CI and skip elsewhere, naming it and why."""
    try:
        return start()
    except Exception as exc:
        unavailable(f"{what}: {type(exc).__name__}: {exc}")
        raise


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


def succeeds(argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 10) -> bool:
    """Whether a command (a daemon's health probe) exits 0 within ``timeout`` seconds."""
    try:
        return subprocess.run(list(argv), capture_output=True, env=env, timeout=timeout, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def host_name() -> str:
    """This machine's short host name (what the schedulers call the one node)."""
    return socket.gethostname().split(".")[0]


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


def pid_from_file(pid_file: Path) -> int | None:
    """The pid a daemon wrote to ``pid_file`` when that process is alive (a zombie is not), else None."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    try:  # the state after the command name, which may hold spaces and parentheses
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    return None if state == "Z" else pid


def terminate(pid: int | None, *, timeout: float = 30) -> None:
    """SIGTERM ``pid`` (a testbed daemon) and wait, at most ``timeout`` seconds, until it is gone."""
    if pid is None:
        return
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def testbed_main(
    argv: list[str], *, start: Callable[[], Any], stop: Callable[[], None], healthy: Callable[[], bool]
) -> int:
    """``python -m tests.testbed.NAME start|stop|status``: bring a testbed up, down, or say how it is."""
    command = argv[0] if argv else "status"
    if command == "start":
        print(start())
    elif command == "stop":
        stop()
    else:
        print("healthy" if healthy() else "not running")
    return 0
