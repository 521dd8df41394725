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


def test_threads_that_open_a_new_registry_at_once_never_see_it_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first submit of a process records the job while the poller thread reads the registry: both may
    create it. Each creation fills a file of its own before linking it into place (they shared one, so one
    thread truncated the file another was linking: "is empty (truncated?)")."""
    import threading

    from clustrix import registry

    for attempt in range(40):
        monkeypatch.setenv("CLUSTRIX_DATA_DIR", str(tmp_path / f"data-{attempt}"))
        start = threading.Barrier(6)
        errors: list[BaseException] = []

        def open_it(start: threading.Barrier = start, errors: list[BaseException] = errors) -> None:
            start.wait()
            try:
                registry.check()
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, f"attempt {attempt}: {errors[0]!r}"
        assert [p.name for p in (tmp_path / f"data-{attempt}").iterdir() if p.name.endswith(".new")] == []
