"""The local job registry keeps what it records private to the user."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from clustrix import registry


def test_the_registry_is_private_even_in_a_data_dir_that_existed_readable_by_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    monkeypatch.setenv("CLUSTRIX_DATA_DIR", str(data))
    old_umask = os.umask(0o022)
    try:
        assert registry.list_jobs() == []  # opens (and creates) the database
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = sorted(p.name for p in data.iterdir())
    assert "jobs.sqlite" in files
    for path in data.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path.name} is readable by others"
