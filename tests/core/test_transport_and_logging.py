from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import structlog

from clustrix import cluster
from clustrix.errors import CommandError
from clustrix.plugin.transport import LocalTransport, Transport


def test_local_transport_runs_argv_without_a_shell(tmp_path: Path) -> None:
    transport = LocalTransport()
    assert isinstance(transport, Transport)
    weird = "a b; echo injected $(id) 'q\""
    result = transport.run(["printf", "%s", weird], cwd=str(tmp_path))
    assert result.ok and result.stdout == weird
    assert transport.run(["cat"], input=b"from stdin").stdout == "from stdin"
    assert transport.run(["sh", "-c", 'printf %s "$X"'], env={"X": "1 2"}).stdout == "1 2"


def test_local_transport_check_raises_with_the_commands_stderr() -> None:
    with pytest.raises(CommandError, match="exited 3: boom"):
        LocalTransport().run(["sh", "-c", "echo boom >&2; exit 3"], check=True)


def test_local_transport_files_are_private_and_replaced_atomically(tmp_path: Path) -> None:
    transport = LocalTransport()
    directory = str(tmp_path / "a" / "b")
    transport.makedirs(directory)
    assert os.stat(directory).st_mode & 0o777 == 0o700
    target = f"{directory}/f.bin"
    transport.write_bytes(target, b"one")
    transport.write_bytes(target, b"two")
    assert transport.read_bytes(target) == b"two"
    assert os.stat(target).st_mode & 0o777 == 0o600
    assert transport.listdir(directory) == ["f.bin"]  # no temporary file left behind
    assert transport.exists(target) and not transport.exists(f"{directory}/missing")
    with pytest.raises(FileNotFoundError):
        transport.read_bytes(f"{directory}/missing")


def test_clustrix_never_configures_logging() -> None:
    root_handlers = list(logging.getLogger().handlers)
    was_configured = structlog.is_configured()
    assert cluster(lambda: 5)() == 5
    assert cluster(executor="thread")(lambda: 6)() == 6
    assert structlog.is_configured() == was_configured
    assert logging.getLogger().handlers == root_handlers
