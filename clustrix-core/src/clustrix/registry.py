"""The local job registry: every remote job this user submitted, in SQLite.

It lets a new Python process (or the ``clustrix`` CLI) find, wait for, fetch and cancel
jobs after the process that submitted them is gone. The database lives under
``platformdirs.user_data_dir("clustrix")`` (``$CLUSTRIX_DATA_DIR`` overrides it), is
private to the user, and is safe with several processes at once (WAL, busy timeout).
Secrets are never stored: no ``password``, and of ``environment_variables`` only the names.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import platformdirs

from clustrix.errors import StateFileError
from clustrix.plugin.types import JobHandle, JobSpec, JobState, JobStatus

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


def _data_dir_error(path: Path, exc: OSError) -> StateFileError:
    where = "CLUSTRIX_DATA_DIR" if os.environ.get("CLUSTRIX_DATA_DIR") else "the clustrix data dir"
    return StateFileError(
        f"{where} {path} cannot be used as a folder ({exc.strerror or exc}): point CLUSTRIX_DATA_DIR at a "
        f"folder you own, or fix {path} (it must be a directory you can write)"
    )


def _registry_error(path: Path, problem: str) -> StateFileError:
    return StateFileError(
        f"the job registry {path} {problem}: if the file is damaged, move it aside (mv {path} {path}.damaged) "
        "and clustrix starts an empty one (the jobs recorded in it can then not be attached by id); "
        "or point CLUSTRIX_DATA_DIR at another folder"
    )


def _create(path: Path) -> None:
    """Create an empty registry at ``path`` atomically: a zero-byte registry is always a damaged one.

    The file is made 0600 before SQLite opens it (SQLite gives its -wal and -shm files
    the same mode), filled with the schema, then linked into place unless another
    process or thread was faster.
    """
    # a file of this call's own (0600): two threads of one process may create the registry at once
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
    os.close(fd)
    tmp = Path(name)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")  # kept in the file: no connection switches it later
            conn.execute(_SCHEMA)
        finally:
            conn.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


@contextmanager
def _connect() -> Iterator[sqlite3.Connection]:
    path = database_path()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.parent.stat().st_mode & 0o077:
            os.chmod(path.parent, 0o700)  # hosts, users and paths of your jobs are nobody else's business
        if not path.exists():
            _create(path)
    except OSError as exc:
        raise _data_dir_error(path.parent, exc) from None
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise _registry_error(path, f"cannot be opened ({exc.strerror or exc})") from None
    if size == 0:
        raise _registry_error(path, "is empty (truncated?)")
    try:
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    except sqlite3.Error as exc:
        raise _registry_error(path, f"cannot be opened ({exc})") from None
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        # switching needs every other connection gone and is not retried on "locked": only a registry
        # made before it was created in WAL mode switches, once
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(_SCHEMA)
        if "counts" not in {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}:
            # registries made before per-call counts were recorded
            with contextlib.suppress(sqlite3.OperationalError):  # another process added it first
                conn.execute("ALTER TABLE jobs ADD COLUMN counts TEXT")
        yield conn
    except sqlite3.DatabaseError as exc:
        raise _registry_error(path, f"cannot be read ({exc})") from None
    finally:
        conn.close()


def check() -> str:
    """Read every record of the registry (``clustrix doctor``); raise :class:`StateFileError` if it is damaged."""
    with _connect() as conn:
        integrity = conn.execute("PRAGMA quick_check").fetchone()[0]
        if integrity != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {integrity}")
        rows = conn.execute("SELECT * FROM jobs").fetchall()
    for row in rows:
        _row_to_record(row)
    return f"{database_path()} ({len(rows)} jobs)"


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
    #: calls ``done``/``failed``/``running``/``pending`` at the last update, when known
    counts: dict[str, int] | None = None

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
            "counts": self.counts,
            "native_id": self.handle.native_id,
            "host": self.handle.host,
            "job_dir": self.handle.job_dir,
        }


def _row_to_record(row: tuple[Any, ...]) -> JobRecord:
    job_id, scheduler, name, size, submitted_at, handle, config, state, reason, updated_at = row[:10]
    counts = json.loads(row[10]) if len(row) > 10 and row[10] else None
    return JobRecord(
        counts=counts,
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
    config = storable_config(spec.config.as_dict())
    now = time.time()
    with _connect() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO jobs (job_id, scheduler, name, size, submitted_at, handle, config, state, reason, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    """Store a job's state (its final one, mostly), and its call counts when the status has them."""
    _update(job_id, status, only_unfinished=False)


def update_progress(job_id: str, status: JobStatus) -> None:
    """Store a running job's state and call counts; a job the registry already holds as final is left alone.

    (The process that saw the job end may have written its final state while this one polled.)
    """
    _update(job_id, status, only_unfinished=True)


def update_handle(handle: JobHandle) -> None:
    """Store the new handle of a job whose calls were resubmitted (``retries``): it is pending again."""
    with _connect() as conn:
        conn.execute(
            "UPDATE jobs SET handle = ?, state = ?, reason = NULL, updated_at = ? WHERE job_id = ?",
            (json.dumps(handle.to_dict()), JobState.PENDING.value, time.time(), handle.job_id),
        )


def _update(job_id: str, status: JobStatus, *, only_unfinished: bool) -> None:
    finals = [s.value for s in JobState if s.final] if only_unfinished else []
    where = f" AND state NOT IN ({','.join('?' * len(finals))})" if finals else ""
    with _connect() as conn:
        conn.execute(
            "UPDATE jobs SET state = ?, reason = ?, updated_at = ?, counts = COALESCE(?, counts) WHERE job_id = ?"
            + where,
            (
                status.state.value,
                status.reason,
                time.time(),
                json.dumps(status.counts) if status.counts is not None else None,
                job_id,
                *finals,
            ),
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
    records = []
    for row in rows:
        try:
            records.append(_row_to_record(row))
        except (TypeError, ValueError, KeyError) as exc:  # one damaged row must not hide the others
            warnings.warn(
                f"job {row[0]!r} in the job registry {database_path()} cannot be read and is not listed: {exc}",
                RegistryWarning,
                stacklevel=2,
            )
    return records


class RegistryWarning(UserWarning):
    """A record of the job registry could not be read; the others are still listed."""
