"""One job's status from its array tasks: exit-code files first, then SLURM's records (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from clustrix.jobdir import OutcomeFiles
from clustrix.jobs import JobState, JobStatus
from clustrix_slurm.parse import TaskRecord
from clustrix_slurm.states import FAILURE_PRIORITY, explain_reason, never_runnable, to_job_state


def status_from_exit_codes(exit_codes: Mapping[int, int]) -> JobStatus:
    """Every task wrote its exit-code file, so every call wrote its outcome."""
    worst = max(exit_codes.values(), default=0)
    if worst == 0:
        return JobStatus(state=JobState.COMPLETED, exit_code=0)
    failed = sorted(task for task, code in exit_codes.items() if code)
    return JobStatus(
        state=JobState.FAILED,
        reason=f"a call raised an exception (array task(s) {', '.join(map(str, failed[:10]))})",
        exit_code=worst,
    )


def status_from_outcomes(files: OutcomeFiles) -> JobStatus:
    """Every call wrote its outcome: the job is over for clustrix, whatever tasks still wait in SLURM."""
    if not files.failed:
        return JobStatus(state=JobState.COMPLETED, exit_code=0)
    failed = sorted(files.failed)
    more = f" and {len(failed) - 10} more" if len(failed) > 10 else ""
    return JobStatus(
        state=JobState.FAILED,
        reason=f"a call raised an exception (call(s) {', '.join(map(str, failed[:10]))}{more})",
        exit_code=1,
    )


def records_by_task(records: Iterable[TaskRecord], n_tasks: int) -> dict[int, TaskRecord]:
    """The latest record of each array task (a plain job's record stands for task 0)."""
    by_task: dict[int, TaskRecord] = {}
    for record in records:
        for task in record.tasks if record.tasks is not None else range(n_tasks):
            by_task[task] = record
    return by_task


def _describe(record: TaskRecord, task: int, n_tasks: int) -> str:
    words = record.state.strip()
    if record.reason and record.reason not in words:
        words += f" ({explain_reason(record.reason)})"
    if record.exit_code not in (None, 0):
        words += f", exit code {record.exit_code}"
    return f"array task {task}: {words}" if n_tasks > 1 else words


def job_status(records: Iterable[TaskRecord], n_tasks: int, exit_codes: Mapping[int, int]) -> JobStatus | None:
    """Combine the tasks of one array into one status; None when SLURM did not report every task.

    A task with an exit-code file is done whatever SLURM says. A pending task whose
    reason means it can never start makes the whole job FAILED with that reason.
    """
    by_task = records_by_task(records, n_tasks)
    open_tasks = [t for t in range(n_tasks) if t not in exit_codes]
    if not open_tasks:
        return status_from_exit_codes(exit_codes)
    unknown = [t for t in open_tasks if t not in by_task]
    states = {t: to_job_state(by_task[t].state) for t in open_tasks if t in by_task}

    for task, state in states.items():
        record = by_task[task]
        if state is JobState.PENDING and never_runnable(record.reason):
            return JobStatus(
                state=JobState.FAILED,
                reason="SLURM will never start this job: " + _describe(record, task, n_tasks),
            )
    active = [t for t, s in states.items() if not s.final]
    if active:
        running = [t for t in active if states[t] is JobState.RUNNING]
        task = running[0] if running else active[0]
        state = JobState.RUNNING if running else states[task]
        return JobStatus(state=state, reason=by_task[task].reason)
    if unknown:
        return None
    if all(s is JobState.COMPLETED for s in states.values()) and not any(by_task[t].exit_code for t in states):
        # SLURM says done but a task left no exit-code file: core reports the lost calls
        return JobStatus(state=JobState.COMPLETED, reason="the runner wrote no exit-code file", exit_code=0)
    worst = min(states, key=lambda t: (FAILURE_PRIORITY.index(states[t]) if states[t] in FAILURE_PRIORITY else 99, t))
    record = by_task[worst]
    state = states[worst]
    if state is JobState.COMPLETED:
        state = JobState.FAILED
    return JobStatus(state=state, reason=_describe(record, worst, n_tasks), exit_code=record.exit_code)
