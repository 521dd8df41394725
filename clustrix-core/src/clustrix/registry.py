"""The local job registry: every remote job this user submitted, in SQLite.

It lets a new Python process (or the ``clustrix`` CLI) find, wait for, fetch and cancel
jobs after the process that submitted them is gone. The database lives under
``platformdirs.user_data_dir("clustrix")`` (``$CLUSTRIX_DATA_DIR`` overrides it), is
private to the user, and is safe with several processes at once (WAL, busy timeout).
Secrets are never stored: no ``password``, and of ``environment_variables`` only the names.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import platformdirs

from clustrix.jobs import JobHandle, JobSpec, JobState, JobStatus

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id       TEXT PRIMARY KEY,
    scheduler    TEXT NOT NULL,
    name         TEXT NOT NULL,
    size         INTEGER NOT NULL,
    submitted_at REAL NOT NULL,
    handle       TEXT NOT NULL,
    config       TEXT NOT NULL,
    state        TEXT NOT NULL,
    reason       TEXT,
    updated_at   REAL NOT NULL
)
"""


def data_dir() -> Path:
    override = os.environ.get("CLUSTRIX_DATA_DIR")
    return Path(override).expanduser() if override else Path(platformdirs.user_data_dir("clustrix"))


def database_path() -> Path:
    return data_dir() / "jobs.sqlite"


@contextmanager
def _connect() -> Iterator[sqlite3.Connection]:
    path = database_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.parent.stat().st_mode & 0o077:
        os.chmod(path.parent, 0o700)  # hosts, users and paths of your jobs are nobody else's business
    if not path.exists():
        # made 0600 before SQLite opens it: SQLite gives its -wal and -shm files the same mode
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute(_SCHEMA)
        yield conn
    finally:
        conn.close()


@attrs.frozen(kw_only=True)
class JobRecord:
    """One registered job, as stored."""

    job_id: str
    scheduler: str
    name: str
    size: int
    submitted_at: float
    handle: JobHandle
    config: dict[str, Any]
    state: JobState
    reason: str | None
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "scheduler": self.scheduler,
            "name": self.name,
            "size": self.size,
            "submitted_at": self.submitted_at,
            "state": self.state.value,
            "reason": self.reason,
            "updated_at": self.updated_at,
            "native_id": self.handle.native_id,
            "host": self.handle.host,
            "job_dir": self.handle.job_dir,
        }


def _row_to_record(row: tuple[Any, ...]) -> JobRecord:
    job_id, scheduler, name, size, submitted_at, handle, config, state, reason, updated_at = row
    return JobRecord(
        job_id=job_id,
        scheduler=scheduler,
        name=name,
        size=size,
        submitted_at=submitted_at,
        handle=JobHandle.from_dict(json.loads(handle)),
        config=json.loads(config),
        state=JobState(state),
        reason=reason,
        updated_at=updated_at,
    )


def storable_config(values: dict[str, Any]) -> dict[str, Any]:
    """What the registry keeps of a configuration: no ``password``, and of ``environment_variables`` the names only.

    ``values`` is ``ClusterConfig.as_dict()`` (already without secrets). A job attached
    later (:meth:`clustrix.Job.attach`) takes both from the configuration of that time.
    """
    kept = dict(values)
    kept["environment_variable_names"] = sorted(kept.pop("environment_variables", None) or {})
    return kept


def record(spec: JobSpec, handle: JobHandle) -> None:
    """Store a newly submitted job."""
    config = storable_config(spec.config.as_dict()) if spec.config is not None else {}
    now = time.time()
    with _connect() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                handle.job_id,
                handle.scheduler,
                spec.name,
                handle.size,
                now,
                json.dumps(handle.to_dict()),
                json.dumps(config, default=str),
                JobState.PENDING.value,
                None,
                now,
            ),
        )


def update_state(job_id: str, status: JobStatus) -> None:
    with _connect() as conn:
        conn.execute(
            "UPDATE jobs SET state = ?, reason = ?, updated_at = ? WHERE job_id = ?",
            (status.state.value, status.reason, time.time(), job_id),
        )


def get(job_id: str) -> JobRecord:
    """The record of ``job_id``; a unique prefix of an id is enough. ``KeyError`` if unknown."""
    with _connect() as conn:
        rows = conn.execute(
            "SELECT * FROM jobs WHERE job_id = ? OR job_id LIKE ? ESCAPE '\\' ORDER BY job_id = ? DESC LIMIT 2",
            (job_id, _like_prefix(job_id), job_id),
        ).fetchall()
    if not rows:
        raise KeyError(f"no job {job_id!r} in the registry at {database_path()}")
    if len(rows) > 1 and rows[0][0] != job_id:
        raise KeyError(f"job id prefix {job_id!r} is ambiguous: give more of the id")
    return _row_to_record(rows[0])


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def list_jobs(*, limit: int = 50, unfinished_only: bool = False) -> list[JobRecord]:
    query = "SELECT * FROM jobs"
    if unfinished_only:
        finals = [s.value for s in JobState if s.final]
        query += " WHERE state NOT IN (" + ",".join("?" * len(finals)) + ")"
        params: list[Any] = finals
    else:
        params = []
    query += " ORDER BY submitted_at DESC LIMIT ?"
    with _connect() as conn:
        rows = conn.execute(query, (*params, limit)).fetchall()
    return [_row_to_record(row) for row in rows]
