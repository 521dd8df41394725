"""One job's status from its files and its scheduler records (pure; the dialect maps native states).

Files win: every call's outcome, or every task's exit-code file, makes a job final whatever
the scheduler still says. Otherwise the records of the status (or history) query decide,
task by task, with tasks that wrote their exit file counted as done.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from clustrix.batch.dialect import FAILURE_PRIORITY, Dialect, TaskRecord
from clustrix.plugin.types import JobState, JobStatus

#: The reason of a job that clustrix cancelled.
CANCELLED_REASON = "cancelled through clustrix"


@attrs.frozen(kw_only=True)
class JobFiles:
    """What one poll round saw in a job's ``out/``: exit codes by (engine) task, outcomes, failures."""

    exits: Mapping[int, int] = attrs.field(factory=dict)
    outcomes: int = 0
    failed: frozenset[int] = frozenset()
    cancelled: bool = False
    #: of :attr:`outcomes`, those of calls that raised (counted in the same pass, so never ahead of it)
    failed_outcomes: int = 0
    #: calls some array task has claimed (started); a claim stays when its call ends
    claims: int = 0

    def all_calls_done(self, n_calls: int) -> bool:
        return self.outcomes >= n_calls

    def all_tasks_done(self, n_tasks: int) -> bool:
        return all(t in self.exits for t in range(n_tasks))


def status_from_exit_codes(exit_codes: Mapping[int, int], timeout_exit_code: int | None = None) -> JobStatus:
    """Every task wrote its exit-code file, so every call it ran wrote its outcome.

    A task whose file holds ``timeout_exit_code`` (:attr:`Dialect.timeout_exit_code`) was ended by the
    job script's own time limit: the job is ``TIMEOUT``.
    """
    worst = max(exit_codes.values(), default=0)
    if worst == 0:
        return JobStatus(state=JobState.COMPLETED, exit_code=0)
    timed_out = sorted(
        task for task, code in exit_codes.items() if timeout_exit_code is not None and code == timeout_exit_code
    )
    if timed_out:
        return JobStatus(
            state=JobState.TIMEOUT,
            reason=f"the time limit ended array task(s) {', '.join(map(str, timed_out[:10]))}",
            exit_code=timeout_exit_code,
        )
    failed = sorted(task for task, code in exit_codes.items() if code)
    return JobStatus(
        state=JobState.FAILED,
        reason=f"a call raised an exception (array task(s) {', '.join(map(str, failed[:10]))})",
        exit_code=worst,
    )


def status_from_outcomes(failed: Iterable[int]) -> JobStatus:
    """Every call wrote its outcome: the job is over for clustrix, whatever tasks still wait in the queue."""
    failed = sorted(failed)
    if not failed:
        return JobStatus(state=JobState.COMPLETED, exit_code=0)
    more = f" and {len(failed) - 10} more" if len(failed) > 10 else ""
    return JobStatus(
        state=JobState.FAILED,
        reason=f"a call raised an exception (call(s) {', '.join(map(str, failed[:10]))}{more})",
        exit_code=1,
    )


def status_from_files(
    files: JobFiles, n_tasks: int, n_calls: int, timeout_exit_code: int | None = None
) -> JobStatus | None:
    """The final status the files alone prove, or None while some call and some task are still open."""
    if files.all_calls_done(n_calls):
        return status_from_outcomes(files.failed)
    if files.all_tasks_done(n_tasks):
        return status_from_exit_codes(files.exits, timeout_exit_code)
    return None


def call_counts(
    files: JobFiles, n_calls: int, *, running_tasks: int | None = None, final: bool = False
) -> dict[str, int]:
    """How many calls are ``done``, ``failed``, ``running`` and ``pending``; the four always sum to ``n_calls``.

    Per call, not per array task (a task runs several calls, one at a time): a call is
    finished when its outcome exists, running when a task claimed it and it has no outcome
    yet (at most one per task the scheduler reports running, when ``running_tasks`` is
    known: a claim left by a killed or requeued task is pending again), and pending
    otherwise. Once the job is ``final``, a call without an outcome will never get one: it counts as failed.
    """
    n_calls = max(0, n_calls)
    finished = min(max(0, files.outcomes), n_calls)
    failed = min(max(0, files.failed_outcomes), finished)
    done = finished - failed
    if final:
        return {"done": done, "failed": n_calls - done, "running": 0, "pending": 0}
    running = max(0, files.claims - files.outcomes)
    if running_tasks is not None:
        running = min(running, max(0, running_tasks))
    running = min(running, n_calls - finished)
    return {"done": done, "failed": failed, "running": running, "pending": n_calls - finished - running}


def running_tasks(dialect: Dialect, records: Iterable[TaskRecord], n_tasks: int, exits: Mapping[int, int]) -> int:
    """How many of the job's tasks the scheduler reports RUNNING and have not written their exit file."""
    by_task = records_by_task(dialect, records, n_tasks)
    return sum(
        1 for task, record in by_task.items() if task not in exits and dialect.to_job_state(record) is JobState.RUNNING
    )


def records_by_task(dialect: Dialect, records: Iterable[TaskRecord], n_tasks: int) -> dict[int, TaskRecord]:
    """Each engine task's latest record.

    A record without tasks (a plain job, or a whole array on one line) stands for every task no
    other record names.
    """
    by_task: dict[int, TaskRecord] = {}
    whole: TaskRecord | None = None
    for record in records:
        if record.tasks is None:
            whole = record
            continue
        for native in record.tasks:
            task = native - dialect.first_task_index
            if 0 <= task < n_tasks:
                by_task[task] = record
    if whole is not None:
        for task in range(n_tasks):
            by_task.setdefault(task, whole)
    return by_task


def describe(dialect: Dialect, record: TaskRecord, task: int, n_tasks: int) -> str:
    """``array task 3: FAILED (reason), exit code 2``: a record in words."""
    words = record.state.strip()
    if record.reason and record.reason not in words:
        words += f" ({dialect.explain_reason(record.reason)})"
    if record.exit_code not in (None, 0):
        words += f", exit code {record.exit_code}"
    return f"array task {task}: {words}" if n_tasks > 1 else words


def job_status(
    dialect: Dialect, records: Iterable[TaskRecord], n_tasks: int, exit_codes: Mapping[int, int]
) -> JobStatus | None:
    """Combine the tasks of one job into one status; None when the records do not cover every open task.

    A task with an exit-code file is done whatever the scheduler says. A pending task that
    :meth:`Dialect.never_runnable` says can never start makes the whole job FAILED with that reason.
    """
    by_task = records_by_task(dialect, records, n_tasks)
    open_tasks = [t for t in range(n_tasks) if t not in exit_codes]
    if not open_tasks:
        return status_from_exit_codes(exit_codes, dialect.timeout_exit_code)
    unknown = [t for t in open_tasks if t not in by_task]
    states = {t: dialect.to_job_state(by_task[t]) for t in open_tasks if t in by_task}
    never = never_runnable(dialect, records, n_tasks, exit_codes)
    if never is not None:
        return never
    active = [t for t, s in states.items() if not s.final]
    if active:
        running = [t for t in active if states[t] is JobState.RUNNING]
        task = running[0] if running else active[0]
        state = JobState.RUNNING if running else states[task]
        return JobStatus(state=state, reason=by_task[task].reason)
    if unknown:
        return None
    if all(s is JobState.COMPLETED for s in states.values()) and not any(by_task[t].exit_code for t in states):
        # the scheduler says done but a task left no exit-code file: core reports the lost calls
        return JobStatus(state=JobState.COMPLETED, reason="the runner wrote no exit-code file", exit_code=0)
    worst = min(states, key=lambda t: (FAILURE_PRIORITY.index(states[t]) if states[t] in FAILURE_PRIORITY else 99, t))
    record = by_task[worst]
    state = states[worst]
    if state is JobState.COMPLETED:
        state = JobState.FAILED
    return JobStatus(state=state, reason=describe(dialect, record, worst, n_tasks), exit_code=record.exit_code)


def never_runnable(
    dialect: Dialect, records: Iterable[TaskRecord], n_tasks: int, exit_codes: Mapping[int, int]
) -> JobStatus | None:
    """The FAILED status of a job the scheduler will never start (:meth:`Dialect.never_runnable` of a
    pending open task), or None. The engine reports it and cancels the job."""
    by_task = records_by_task(dialect, records, n_tasks)
    for task in range(n_tasks):
        record = by_task.get(task)
        if task in exit_codes or record is None or dialect.to_job_state(record) is not JobState.PENDING:
            continue
        never = dialect.never_runnable(record)
        if never is not None:
            return JobStatus(
                state=JobState.FAILED, reason=f"{dialect.label or dialect.name} will never start this job: {never}"
            )
    return None


def as_cancelled(status: JobStatus | None, files: JobFiles) -> JobStatus | None:
    """A job clustrix cancelled ends CANCELLED, whatever the scheduler calls the end (tsp: a killed job "finished")."""
    if not files.cancelled:
        return status
    if status is None or (status.state.final and status.state is not JobState.CANCELLED):
        return JobStatus(
            state=JobState.CANCELLED, reason=CANCELLED_REASON, exit_code=None if status is None else status.exit_code
        )
    return status
