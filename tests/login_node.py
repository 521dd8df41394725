"""A machine without the scheduler's commands (a laptop, a node without the client), made for real.

:func:`path_without` builds a ``PATH`` of links to every program of this machine's ``PATH``
except the named ones; :func:`check_missing_commands` runs ``clustrix doctor`` and a submit
with it and checks what a user meets: the doctor names the missing command and the fix, the
submit raises a clear clustrix error, and nothing is left behind (no job folder, no registry entry).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from clustrix import cluster, configure, registry
from clustrix.errors import SchedulerCommandNotFoundError


def path_without(commands: Iterable[str], where: Path) -> str:
    """A PATH (one folder, ``where``) with every program of this PATH but ``commands``, and this Python's."""
    hidden = set(commands)
    where.mkdir(parents=True, exist_ok=True)
    folders = [str(Path(sys.executable).parent), *os.environ.get("PATH", "").split(os.pathsep)]
    for folder in folders:
        if not os.path.isdir(folder):
            continue
        for entry in os.scandir(folder):
            link = where / entry.name
            if entry.name in hidden or link.exists() or not os.access(entry.path, os.X_OK):
                continue
            link.symlink_to(entry.path)
    return str(where)


def square(x: int) -> int:
    return x * x


def doctor(cluster_type: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``clustrix doctor`` in a new process, configured for ``cluster_type`` with a work dir in ``tmp_path``."""
    work = tmp_path / "jobs"
    work.mkdir(mode=0o700, exist_ok=True)
    config_file = tmp_path / "clustrix.toml"
    config_file.write_text(f'cluster_type = "{cluster_type}"\nremote_work_dir = "{work}"\n')
    return subprocess.run(
        [sys.executable, "-m", "clustrix.cli", "doctor"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CLUSTRIX_CONFIG": str(config_file), **env},
    )


def check_doctor_finds_commands(cluster_type: str, tmp_path: Path, commands: Iterable[str], **env: str) -> str:
    """Doctor on a machine that has the scheduler: every line ok, the commands' paths and the site query shown."""
    found = doctor(cluster_type, tmp_path, **env)
    assert found.returncode == 0, found
    line = next(line for line in found.stdout.splitlines() if "scheduler commands" in line)
    assert line.startswith("[ok] scheduler commands:"), found.stdout
    for command in commands:
        assert f"/{command}" in line, line
    return line


def check_missing_commands(
    cluster_type: str, commands: Iterable[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    """Doctor and a submit where ``commands`` are not on PATH: ``missing`` (the first) is named, nothing is left."""
    path = path_without(commands, tmp_path / "bin")
    work = tmp_path / "jobs"
    checked = doctor(cluster_type, tmp_path, PATH=path)
    assert checked.returncode == 1, checked
    failed = [line for line in checked.stdout.splitlines() if line.startswith("[FAIL]")]
    assert len(failed) == 1 and failed[0].startswith("[FAIL] scheduler commands:"), checked.stdout
    assert f" {missing}" in failed[0] and "not found on localhost (not on the PATH there)" in failed[0], failed[0]
    assert "set cluster_host to a login node" in failed[0] and "add their directory to PATH" in failed[0], failed[0]

    monkeypatch.setenv("PATH", path)
    configure(cluster_type=cluster_type, remote_work_dir=str(work), python_executable=sys.executable)
    expected = rf"\b{missing}\b.*not found on localhost.*Nothing was submitted"
    with pytest.raises(SchedulerCommandNotFoundError, match=expected) as caught:
        cluster(square)(3)
    assert "FileNotFoundError" not in str(caught.value) and "sh: " not in str(caught.value)
    assert list(work.iterdir()) == [], f"a submit that cannot start left {list(work.rglob('*'))}"
    assert registry.list_jobs() == []
