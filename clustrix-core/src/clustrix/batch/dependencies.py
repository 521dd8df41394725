"""Scheduler dependencies in the batch engine: which dialects hold jobs, how, and which job directories stay.

The client (:mod:`clustrix.api.dependencies`) decides that a job depends on others; here the
engine lines the tasks up (element-wise where the packing allows), puts the dialect's options
on the submit command, records the dependencies in the handle (the registry keeps them, so
``clustrix jobs`` and another process see them), and keeps an upstream's directory until its
dependants have read it.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from clustrix.batch.dialect import Dialect, ScriptJob
from clustrix.plugin.types import Dependency, JobHandle, JobSpec

_kept: dict[str, int] = {}
#: Per upstream: dependants whose submit has not been recorded yet, and the recorded ones
#: (native id, and whether the upstream is their only dependency).
_unrecorded: dict[str, int] = {}
_dependants: dict[str, list[tuple[str, bool]]] = {}
#: Upstreams whose directory was given up for removal (:func:`may_remove`).
_removing: set[str] = set()
_lock = threading.Lock()


def holds_jobs(dialect: Dialect) -> bool:
    """True when the dialect implements :meth:`Dialect.dependency_options` (else: client-side chaining)."""
    return type(dialect).dependency_options is not Dialect.dependency_options


def lined_up(dependencies: Sequence[Dependency], size: int, n_tasks: int) -> tuple[Dependency, ...]:
    """``dependencies`` with ``elementwise`` set where the dependant's task *t* needs only the upstream's task *t*.

    Both jobs pack calls the same way (:func:`clustrix.remote.jobdir.plan_tasks`) when they have as
    many calls and tasks, so then call *i* reading call *i* means task *t* reading task *t*.
    """
    return tuple(
        attrs.evolve(d, elementwise=n_tasks > 1 and d.tasks == n_tasks and d.one_to_one(size)) for d in dependencies
    )


def with_options(dialect: Dialect, argv: list[str], job: ScriptJob) -> list[str]:
    """The submit argv with the dialect's dependency options after the command's name."""
    options = dialect.dependency_options(job) if job.after else None
    return [argv[0], *options, *argv[1:]] if options else argv


def handle_data(spec: JobSpec) -> dict[str, Any]:
    """What the handle (and so the registry) keeps of ``spec``'s dependencies: ``{"after": [...]}`` or nothing."""
    if not spec.dependencies:
        return {}
    after = [
        {"job": d.job_id, "native_id": d.native_id, "calls": [list(c) for c in d.calls]} for d in spec.dependencies
    ]
    return {"after": after}


def keep(job_ids: Sequence[str]) -> None:
    """Dependants will read these jobs' directories: ``cleanup_on_success`` leaves them until :func:`release`."""
    with _lock:
        for job_id in job_ids:
            _kept[job_id] = _kept.get(job_id, 0) + 1
            _unrecorded[job_id] = _unrecorded.get(job_id, 0) + 1


def forget(job_ids: Sequence[str]) -> None:
    """The dependant :func:`keep` counted for these jobs is not submitted after all (chained in the
    client, its input already home, or its submit failed): it neither keeps their directories nor
    stops their leftover tasks from being swept."""
    with _lock:
        for job_id in job_ids:
            _unrecorded[job_id] = max(0, _unrecorded.get(job_id, 0) - 1)
    for job_id in job_ids:
        release(job_id)


def record(spec: JobSpec, native_id: str) -> None:
    """The scheduler accepted ``spec`` as ``native_id``: each of its upstreams knows it holds this job."""
    with _lock:
        for d in spec.dependencies:
            _unrecorded[d.job_id] = max(0, _unrecorded.get(d.job_id, 0) - 1)
            _dependants.setdefault(d.job_id, []).append((native_id, len(spec.dependencies) == 1))


def sweep_command(dialect: Dialect, handle: JobHandle, command: Callable[[Sequence[str]], str]) -> str | None:
    """The shell line that takes the pending tasks of ``handle``'s array out of the queue (every call is done).

    An array no dependant holds, or where the scheduler releases the held jobs of a deleted task
    (:attr:`Dialect.sweep_releases_dependants`), is swept at once. Else its pending tasks may go
    only if every call ended well and each dependant waits for this job alone: the line first
    drops those dependants' dependency (:meth:`Dialect.release_argv`, SLURM ``scontrol update
    Dependency=``), so the cancelled tasks fail nothing. A dependant still being submitted, or held
    for another job too, keeps the tasks queued (they end before Python, see :meth:`Dialect.done_check_lines`).
    Where the dialect can ask (:meth:`Dialect.unwaited_check`), a job that still waits for the array
    (a dependant of another process) keeps them queued too.
    """
    job_id, job_dir, n_calls, native_id = handle.job_id, str(handle.job_dir), handle.size, str(handle.native_id)
    argv = dialect.sweep_argv(native_id)
    if argv is None:
        return None
    if dialect.sweep_releases_dependants:
        return command(argv)
    unwaited = dialect.unwaited_check(native_id, command)  # a dependant of another process is held too
    sweep = command(argv) if unwaited is None else f"if {unwaited}; then {command(argv)}; fi"
    if not kept(job_id):
        return sweep
    with _lock:
        dependants = None if _unrecorded.get(job_id) else list(_dependants.get(job_id, []))
    releases = [dialect.release_argv(n) if alone else None for n, alone in dependants or []]
    if not dependants or any(r is None for r in releases):
        return None
    out = f"{shlex.quote(job_dir.rstrip('/'))}/out"
    outcomes = f'"$(ls -d -- {out}/*.pkl | wc -l)"'
    ended_well = f"! ls -d -- {out}/*.failed >/dev/null 2>&1 && [ {outcomes} -ge {int(n_calls)} ]"
    lines = [f"{command(r)} || :" for r in releases if r is not None]
    return f"if {ended_well}; then {'; '.join(lines)}; {sweep}; fi"


def release(job_id: str) -> bool:
    """One dependant of ``job_id`` is done with it; True when none is left (the directory may go)."""
    with _lock:
        left = _kept.get(job_id, 0) - 1
        if left > 0:
            _kept[job_id] = left
            return False
        _kept.pop(job_id, None)
        return True


def kept(job_id: str) -> bool:
    with _lock:
        return job_id in _kept


def may_remove(job_id: str) -> bool:
    """``cleanup_on_success`` asks to delete ``job_id``'s directory: True, once and for good, unless it is kept.

    The answer and the mark are one step under the lock. A dependant submitted after it (its
    :func:`keep` came too late) must not name the directory: :func:`removing` tells it to wait
    for the job's futures, which settle right after the removal, and take their values.
    """
    with _lock:
        if job_id in _kept:
            return False
        _removing.add(job_id)
        return True


def removing(job_id: str) -> bool:
    """Whether ``job_id``'s directory was given up for removal (see :func:`may_remove`)."""
    with _lock:
        return job_id in _removing
