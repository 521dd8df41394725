"""Fixtures for the ssh tests: one real sshd per session, isolated ~/.ssh, fresh pools."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.testbed.sshd import SSHServer, start_sshd
from tests.testbed.system import unavailable


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "testbed_ssh: needs the real OpenSSH sshd testbed (tests/testbed/sshd.py)")


@pytest.fixture(scope="session")
def sshd() -> Iterator[SSHServer]:
    """A private sshd on 127.0.0.1, key auth for the unprivileged user clustrix-test."""
    try:
        server = start_sshd()
    except Exception as exc:
        unavailable(f"could not start sshd: {type(exc).__name__}: {exc}")
        raise
    yield server
    server.cleanup()


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private $HOME, so ~/.ssh/config and ~/.ssh/known_hosts of the machine play no part."""
    home = tmp_path_factory.mktemp("home")
    (home / ".ssh").mkdir(mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


@pytest.fixture(autouse=True)
def fresh_pool() -> Iterator[None]:
    """Every test starts without pooled connections (a test may restart sshd)."""
    from clustrix_ssh import close_all

    close_all()
    yield
    close_all()


@pytest.fixture
def ssh_config(sshd: SSHServer) -> dict[str, Any]:
    """clustrix configuration keys that reach the testbed sshd."""
    return sshd.config()
