"""From a finished job's outcomes to its futures: a value, the original exception with its remote
traceback, or the :class:`clustrix.JobError` that says why a call wrote no result."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence
from typing import Any

from clustrix.errors import JobError, JobLostError, error_for_state, exception_from_outcome
from clustrix.plugin.types import JobHandle, JobState, JobStatus, Outcome, Outcomes

STDERR_TAIL_CHARS = 4000


def missing_outcome_error(handle: JobHandle, status: JobStatus, stderr_tail: str | None, index: int = 0) -> JobError:
    """The error for a call that wrote no result, chosen by the job's final state (or its failed input)."""
    from clustrix.api.dependencies import upstream_error

    if handle.data.get("after") and (error := upstream_error(handle, index, status)) is not None:
        return error
    if status.state is JobState.COMPLETED:
        cls: type[JobError] = JobLostError
        message = f"job {handle.job_id} finished but wrote no result for this call"
    else:
        cls = error_for_state(status.state)
        message = f"job {handle.job_id} ended {status.state.value} without a result"
    return cls(
        message,
        job_id=handle.job_id,
        state=status.state,
        reason=status.reason,
        stderr_tail=stderr_tail or None,
    )


def tail(text: str, limit: int = STDERR_TAIL_CHARS) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


def settle(future: concurrent.futures.Future[Any], *, value: Any = None, error: BaseException | None = None) -> None:
    """Set a future's value or exception, unless it was cancelled meanwhile."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
    except concurrent.futures.InvalidStateError:
        pass  # cancelled meanwhile


def resolve_futures(
    futures: Sequence[concurrent.futures.Future[Any]],
    outcomes: Sequence[Outcome | None],
    handle: JobHandle,
    status: JobStatus,
    stderr_tail: Any,
) -> None:
    """Set each future from its outcome; ``stderr_tail()`` is called at most once, if needed."""
    tail_text: list[str] = []
    for index, (future, outcome) in enumerate(zip(futures, outcomes, strict=False)):
        if future.done():
            continue
        if outcome is None:
            if not tail_text:
                tail_text.append(stderr_tail())
            settle(future, error=missing_outcome_error(handle, status, tail_text[0], index))
        elif outcome.ok:
            settle(future, value=outcome.value)
        else:
            settle(future, error=exception_from_outcome(outcome, job_id=handle.job_id))


def resolve_whole(
    future: concurrent.futures.Future[Any],
    outcomes: Sequence[Outcome | None],
    handle: JobHandle,
    status: JobStatus,
    stderr_tail: Any,
) -> None:
    """Set one future to every call's value in order, or to the first failed call's error."""
    if isinstance(outcomes, Outcomes) and (all_values := outcomes.values) is not None:
        settle(future, value=all_values)
        return
    values = []
    for index, outcome in enumerate(outcomes):
        if outcome is None:
            settle(future, error=missing_outcome_error(handle, status, stderr_tail(), index))
            return
        if not outcome.ok:
            settle(future, error=exception_from_outcome(outcome, job_id=handle.job_id))
            return
        values.append(outcome.value)
    settle(future, value=values)
