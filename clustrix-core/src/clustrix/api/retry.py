"""Retries (``retries=N``): a call that raised runs again, a lost call is resubmitted, failed calls rerun.

Three places act on the one setting:

- a call that **raised** runs again at once where it ran: in its array task, by the runner
  (:func:`clustrix.remote.runner.execute_with_retries`), or in the local executor's worker
  (:class:`Retried`); no client is needed;
- a call that was **lost** (its task was killed, its node failed, it was preempted without a
  checkpoint: the job ended without the call's outcome) is resubmitted by the poller of the
  process that watches the job (:func:`resubmit_lost`), only that call, in the same job;
- :meth:`clustrix.Job.retry_failed` (``clustrix retry JOB``) reruns the failed and lost calls of
  a finished job, from any process (:func:`retry_failed`).

The two last go through :func:`clustrix.batch.retry.resubmit` (the batch schedulers and the
plain-ssh backend): the job keeps its id and directory, so ``results()`` comes back whole and in order.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from clustrix.errors import ConfigurationError, JobCancelledError
from clustrix.log import get_logger
from clustrix.plugin.types import JobHandle, JobState, Outcome, ResubmitsCalls

if TYPE_CHECKING:
    from clustrix.api.futures import _ActiveJob
    from clustrix.config.settings import ClusterConfig
    from clustrix.plugin.manager import RegisteredScheduler

log = get_logger("clustrix.retry")

#: Failures a call is not run again for where it ran: the same limit would end it again, or it asked to end.
NOT_RETRIED: tuple[type[BaseException], ...] = (MemoryError, SystemExit, KeyboardInterrupt)
#: A job that ended so keeps its lost calls lost: a limit ended it that would end them again. (A job
#: cancelled through clustrix is refused by the resubmit itself, which sees its marker: a task killed on
#: its node is "deleted" for Grid Engine, so the CANCELLED state alone cannot tell.)
NOT_RESUBMITTED = frozenset({JobState.TIMEOUT, JobState.OUT_OF_MEMORY})
#: Where a job's handle counts the resubmissions of each lost call (``{"7": 1}``).
LOST_KEY = "lost_retries"


class Retried:
    """A function run again while it raises, up to ``retries`` more times (the local executor's workers).

    It pickles by reference, so process workers get it as they get the function. The last
    exception gets a note saying how many attempts raised.
    """

    def __init__(self, func: Callable[..., Any], retries: int) -> None:
        self.func = func
        self.retries = retries

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        attempt = 1
        while True:
            try:
                return self.func(*args, **kwargs)
            except NOT_RETRIED:
                raise
            except BaseException as exc:
                if attempt > self.retries:
                    if attempt > 1 and hasattr(exc, "add_note"):
                        exc.add_note(f"clustrix: the call raised on {attempt} attempts (retries={self.retries})")
                    raise
                log.debug("clustrix.call_retried", attempt=attempt, error="".join(traceback.format_exception_only(exc)))
                attempt += 1


def with_retries(func: Callable[..., Any], config: ClusterConfig) -> Callable[..., Any]:
    """``func``, wrapped in :class:`Retried` when the configuration asks for retries."""
    retries = int(config.get("retries") or 0)
    return Retried(func, retries) if retries else func


def lost_calls(outcomes: Sequence[Outcome | None]) -> list[int]:
    """The calls of a finished job that wrote no outcome."""
    return [i for i, outcome in enumerate(outcomes) if outcome is None]


def failed_calls(outcomes: Sequence[Outcome | None]) -> list[int]:
    """The calls of a finished job that raised or wrote no outcome."""
    return [i for i, outcome in enumerate(outcomes) if outcome is None or not outcome.ok]


def resubmit_lost(job: _ActiveJob, outcomes: Sequence[Outcome | None], state: JobState) -> bool:
    """The poller found ``job`` final: resubmit its lost calls that have retries left; True if it did.

    Not for a job that ended :data:`NOT_RESUBMITTED` or was cancelled through clustrix, nor for a
    scheduler that cannot resubmit calls. The job is
    watched again under its new native id, so its futures resolve once the retried calls end.
    """
    retries = int(job.config.get("retries") or 0)
    if not retries or state in NOT_RESUBMITTED or not isinstance(job.scheduler.impl, ResubmitsCalls):
        return False
    used: dict[str, int] = dict(job.handle.data.get(LOST_KEY) or {})
    lost = [i for i in lost_calls(outcomes) if used.get(str(i), 0) < retries]
    if not lost or any(f.cancelled() for f in job.futures):
        return False
    for index in lost:
        used[str(index)] = used.get(str(index), 0) + 1
    try:
        handle = resubmit(job.scheduler, job.handle, job.config, lost, unless_cancelled=True)
    except JobCancelledError:
        return False
    except Exception as exc:  # noqa: BLE001 - the futures get the lost calls' errors instead
        log.warning("clustrix.resubmit_failed", job_id=job.handle.job_id, error=repr(exc))
        return False
    job.handle = attrs.evolve(handle, data={**handle.data, LOST_KEY: used})
    job.status = None
    _record_handle(job.scheduler, job.handle)
    log.info("clustrix.lost_calls_resubmitted", job_id=job.handle.job_id, calls=lost, native_id=handle.native_id)
    job.manager.watch(job)
    return True


def resubmit(
    scheduler: RegisteredScheduler,
    handle: JobHandle,
    config: ClusterConfig,
    calls: Sequence[int],
    *,
    unless_cancelled: bool = False,
) -> JobHandle:
    """Run ``calls`` of the finished job ``handle`` again; the job's handle under its new native id."""
    impl = scheduler.impl
    if not isinstance(impl, ResubmitsCalls):
        raise ConfigurationError(
            f"the {scheduler.name} scheduler cannot run some calls of a job again: submit the failed calls anew"
        )
    return impl.resubmit(handle, config, list(calls), unless_cancelled=unless_cancelled)


def retry_failed(
    scheduler: RegisteredScheduler, handle: JobHandle, config: ClusterConfig, outcomes: Sequence[Outcome | None]
) -> tuple[JobHandle, list[int]]:
    """Resubmit every failed or lost call of a finished job; its new handle and the calls (none: unchanged)."""
    calls = failed_calls(outcomes)
    if not calls:
        return handle, []
    new = resubmit(scheduler, handle, config, calls)
    _record_handle(scheduler, new)
    return new, calls


def _record_handle(scheduler: RegisteredScheduler, handle: JobHandle) -> None:
    """The registry's record of the job now names its resubmitted native job, and it is running again."""
    if not scheduler.impl.persistent:
        return
    from clustrix import registry

    try:
        registry.update_handle(handle)
    except Exception as exc:  # noqa: BLE001 - the live future still gets its result
        log.warning("clustrix.registry_update_failed", job_id=handle.job_id, error=repr(exc))
