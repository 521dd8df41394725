"""Futures for submitted calls, and the one poller that serves every future of the process.

The poller groups unfinished jobs by scheduler and connection (host, port, user) and
asks each group's scheduler about all of its jobs in one ``clustrix_poll`` call per
round, backing off from 50 ms to ``job_poll_interval``. A scheduler that learns of a
completion by itself calls ``wake()`` and is polled at once. When a job is final its
outcomes are fetched and every future resolved: a value, the original exception with
the remote traceback attached, or a :class:`clustrix.JobError` subclass carrying the
scheduler's reason and the tail of the job's stderr.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from clustrix.api import retry
from clustrix.api.interrupts import HeldInterrupts, wait_interruptibly
from clustrix.api.outages import Outages
from clustrix.api.outcomes import resolve_futures, resolve_whole, settle, tail
from clustrix.errors import JobError, UnsafePathError
from clustrix.log import get_logger
from clustrix.plugin.types import JobHandle, JobSpec, JobState, JobStatus

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig
    from clustrix.plugin.manager import RegisteredScheduler

log = get_logger("clustrix.poller")

_MIN_INTERVAL = 0.05
_BACKOFF = 1.5
#: How long polls may keep failing (connection gone, scheduler down) before futures fail.
#: The job itself stays in the registry, so ``Job.attach`` can still fetch it later.
POLL_FAILURE_LIMIT = 300.0
_T = TypeVar("_T")


class ClusterFuture(concurrent.futures.Future[Any]):
    """A ``concurrent.futures.Future`` for one call; ``job_id`` and ``handle`` name its job.

    ``cancel()`` cancels the scheduler job too (pending or running); for an array it
    does so once every future of the array has been cancelled. A future with
    ``index=None`` stands for a whole array: its result is the list of every call's
    result, in order (what ``.map()`` waits on, without a future per call).
    """

    def __init__(self, job: _ActiveJob, index: int | None) -> None:
        super().__init__()
        self._job = job
        self.index = index

    @property
    def job_id(self) -> str:
        return self._job.handle.job_id

    @property
    def handle(self) -> JobHandle:
        return self._job.handle

    @property
    def last_status(self) -> JobStatus | None:
        """The job's status at the poller's last round (None before the first one)."""
        return self._job.status

    def cancel(self) -> bool:
        if self.done():
            return False
        if not super().cancel():
            return False
        self._job.manager.cancelled(self._job)
        return True

    def result(self, timeout: float | None = None) -> Any:
        """The call's value (or its exception raised again); see :meth:`JobManager.interrupted` for Ctrl-C."""
        try:
            return wait_interruptibly(super().result, timeout, self.done)
        except KeyboardInterrupt:
            raise self.interrupted() from None

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            return wait_interruptibly(super().exception, timeout, self.done)
        except KeyboardInterrupt:
            raise self.interrupted() from None

    def interrupted(self) -> KeyboardInterrupt:
        """Ctrl-C while waiting: settle the job (see :meth:`JobManager.interrupted`); the error to raise."""
        return KeyboardInterrupt(self._job.manager.interrupted(self._job))

    def __repr__(self) -> str:
        return f"<ClusterFuture job={self.job_id} index={self.index} state={self._state}>"


class InlineFuture(ClusterFuture):
    """The future of a call that ran inline where it was made (see ``nested_calls``): finished, no job, ``job_id`` None.

    It is finished when returned, so nothing of :class:`ClusterFuture` that reaches a job runs.
    """

    def __init__(self, index: int | None) -> None:
        concurrent.futures.Future.__init__(self)
        self.index = index

    @property
    def job_id(self) -> None:  # type: ignore[override]
        return None

    @property
    def handle(self) -> None:  # type: ignore[override]
        return None

    @property
    def last_status(self) -> None:
        return None

    def interrupted(self) -> KeyboardInterrupt:
        return KeyboardInterrupt()

    def __repr__(self) -> str:
        return f"<InlineFuture index={self.index} state={self._state}>"


@attrs.define(eq=False)
class _ActiveJob:
    manager: JobManager
    handle: JobHandle
    scheduler: RegisteredScheduler
    config: ClusterConfig
    futures: list[ClusterFuture] = attrs.field(factory=list)
    failing_since: float | None = None
    status: JobStatus | None = None
    #: what the first Ctrl-C while waiting for the job did to it (see :meth:`JobManager.interrupted`)
    interruption: str | None = None

    @property
    def group(self) -> tuple[Any, ...]:
        """Jobs polled together, with the first one's config: same scheduler, host and access."""
        return (self.scheduler.name, *self.config.connection_key, self.config.get("remote_work_dir"))


@attrs.define
class _Group:
    next_poll: float
    interval: float = _MIN_INTERVAL


class JobManager:
    """Owns every unfinished job of this process and the poller thread that finishes them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, _ActiveJob] = {}
        self._groups: dict[tuple[Any, ...], _Group] = {}
        self._woken: set[str] = set()
        self._outages = Outages()
        self._event = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- submission -------------------------------------------------------
    def submit(
        self,
        spec: JobSpec,
        scheduler: RegisteredScheduler,
        *,
        whole: bool = False,
        into: list[ClusterFuture] | None = None,
    ) -> list[ClusterFuture]:
        """Submit ``spec``; return a future per call, or with ``whole`` one future for all of them.

        The futures are also added to ``into`` as soon as they exist, so that a caller
        that waits for them can settle the job on a Ctrl-C that comes before this returns.
        A Ctrl-C while a job that ends with this process (the local executor) is submitted
        is held until the job is watched, then cancels it (:meth:`interrupted`): its first
        calls may already run, and nothing else would stop them. A remote submit is not held
        (it may wait on the network) until the scheduler has accepted the job; from then until
        the job is recorded and watched, a Ctrl-C is held too, then names the job, which keeps running.
        """
        from clustrix import registry
        from clustrix.plugin.manager import get_plugin_manager

        persistent = scheduler.impl.persistent
        job: _ActiveJob | None = None
        try:
            # a remote submit may wait on the network: Ctrl-C stays immediate there, until the job exists
            with contextlib.nullcontext() if persistent else HeldInterrupts():
                handle = scheduler.submit(spec, wake=lambda: self._wake(scheduler.name))
                with HeldInterrupts() if persistent else contextlib.nullcontext():
                    job = _ActiveJob(self, handle, scheduler, spec.config)
                    job.futures = (
                        [ClusterFuture(job, None)] if whole else [ClusterFuture(job, i) for i in range(spec.size)]
                    )
                    if into is not None:
                        into.extend(job.futures)
                    if persistent:
                        try:
                            registry.record(spec, handle)
                        except Exception as exc:  # noqa: BLE001 - the job runs; the live future still gets its result
                            log.warning("clustrix.registry_record_failed", job_id=handle.job_id, error=repr(exc))
                    get_plugin_manager().hook.clustrix_job_submitted(spec=spec, handle=handle)
                    log.debug("clustrix.job_submitted", job_id=handle.job_id, scheduler=scheduler.name, size=spec.size)
                    self.watch(job)
        except KeyboardInterrupt:
            if job is None:
                raise
            raise KeyboardInterrupt(self.interrupted(job)) from None
        return job.futures

    def watch(self, job: _ActiveJob) -> None:
        with self._lock:
            self._jobs[job.handle.job_id] = job
            group = self._groups.get(job.group)
            now = time.monotonic()
            if group is None:
                self._groups[job.group] = _Group(next_poll=now + _MIN_INTERVAL)
            else:
                group.interval = _MIN_INTERVAL
                group.next_poll = min(group.next_poll, now + _MIN_INTERVAL)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="clustrix-poller", daemon=True)
                self._thread.start()
        self._event.set()

    def _wake(self, scheduler_name: str) -> None:
        with self._lock:
            self._woken.add(scheduler_name)
        self._event.set()

    def cancelled(self, job: _ActiveJob) -> None:
        """A future of ``job`` was cancelled; cancel the job once all of them are."""
        if all(f.cancelled() for f in job.futures):
            try:
                stopped = job.scheduler.cancel(job.handle, job.config)
            except Exception as exc:  # noqa: BLE001 - the future is cancelled either way
                log.warning("clustrix.cancel_failed", job_id=job.handle.job_id, error=str(exc))
                stopped = False
            with self._lock:
                self._jobs.pop(job.handle.job_id, None)
            if stopped:  # else the registry keeps the job's last known state: it may still run
                self._record_final(job, JobStatus(state=JobState.CANCELLED, reason="cancelled by the user"))

    def interrupted(self, job: _ActiveJob) -> str:
        """Ctrl-C while waiting on ``job``: what happens to it, as the message of the re-raised KeyboardInterrupt.

        A job that ends with this process (the local executor) is cancelled: its calls
        that have not started are dropped and its running calls stopped. A remote job is
        never cancelled silently: it keeps running, and the message names it and the
        commands to wait for it or cancel it. Only the first Ctrl-C acts; later ones get the same message.
        """
        if job.interruption is None:
            job.interruption = self._interrupt(job)
        return job.interruption

    def _interrupt(self, job: _ActiveJob) -> str:
        job_id = job.handle.job_id
        if not job.scheduler.impl.persistent:
            for future in job.futures:
                concurrent.futures.Future.cancel(future)
            with self._lock:
                self._jobs.pop(job_id, None)
            try:
                job.scheduler.cancel(job.handle, job.config)
            except Exception as exc:  # noqa: BLE001 - the interrupt goes on either way
                log.warning("clustrix.cancel_failed", job_id=job_id, error=str(exc))
            return f"interrupted: the local calls of job {job_id} were cancelled"
        return (
            f"interrupted while waiting: job {job_id} ({job.scheduler.name}) keeps running. "
            f"Wait for its result: clustrix result --wait {job_id} "
            f"(or clustrix.Job.attach({job_id!r}).result()); cancel it: clustrix cancel {job_id}"
        )

    # ---- the poller -------------------------------------------------------
    def _due_groups(self) -> tuple[dict[tuple[Any, ...], list[_ActiveJob]], float]:
        now = time.monotonic()
        with self._lock:
            members: dict[tuple[Any, ...], list[_ActiveJob]] = {}
            for job in self._jobs.values():
                members.setdefault(job.group, []).append(job)
            for key in list(self._groups):
                if key not in members:
                    del self._groups[key]
            due = {}
            woken, self._woken = self._woken, set()
            for key, jobs in members.items():
                group = self._groups.setdefault(key, _Group(next_poll=now))
                if group.next_poll <= now or key[0] in woken:
                    due[key] = jobs
            # a wake for a scheduler whose job is not registered yet stays pending
            self._woken |= {name for name in woken if not any(k[0] == name for k in members)}
            wait = min((g.next_poll for g in self._groups.values()), default=now + 3600) - now
        return due, max(0.0, wait)

    def _run(self) -> None:
        while True:
            due, wait = self._due_groups()
            for key, jobs in due.items():
                try:
                    self._poll_group(jobs)
                except Exception as exc:  # noqa: BLE001 - the poller must survive anything
                    log.warning("clustrix.poll_round_failed", group=str(key), error=repr(exc))
                with self._lock:
                    group = self._groups.get(key)
                    if group is not None:
                        group.interval = min(
                            group.interval * _BACKOFF, float(jobs[0].config.get("job_poll_interval", 1.0))
                        )
                        group.next_poll = time.monotonic() + group.interval
            if not due:
                with self._lock:
                    if not self._jobs:
                        self._thread = None
                        return
                self._event.wait(wait)
                self._event.clear()

    def _poll_group(self, jobs: list[_ActiveJob]) -> None:
        scheduler, config = jobs[0].scheduler, jobs[0].config
        try:
            statuses = scheduler.poll([job.handle for job in jobs], config)
        except Exception as exc:  # noqa: BLE001
            waits = self._outages.failed(config, "clustrix.poll_failed", exc, scheduler=scheduler.name)
            for job in jobs:
                job.failing_since = None if waits else job.failing_since
                self._failed_attempt(job, "poll", exc)
            return
        self._outages.answered(config)
        for job in jobs:
            status = statuses.get(job.handle.job_id)
            previous = job.status
            if status is not None:
                job.status = status
            if status is not None and status.state.final:
                self._finish(job, status)  # a failing fetch keeps counting from its first failure
            else:
                job.failing_since = None
                if status is not None and status != previous:
                    self._record(job, status, final=False)

    def _failed_attempt(self, job: _ActiveJob, what: str, exc: Exception) -> None:
        """A poll or fetch failed (connection gone, scheduler down): retry until the limit."""
        now = time.monotonic()
        job.failing_since = job.failing_since or now
        if now - job.failing_since > POLL_FAILURE_LIMIT:
            self._fail(
                job,
                JobError(
                    f"could not {what} job {job.handle.job_id} for {POLL_FAILURE_LIMIT:.0f} s: {exc}; "
                    f"it may still finish: use clustrix.Job.attach({job.handle.job_id!r}) later",
                    job_id=job.handle.job_id,
                ),
            )

    def _finish(self, job: _ActiveJob, status: JobStatus) -> None:
        try:
            outcomes = job.scheduler.fetch(job.handle, job.config)
        except UnsafePathError as exc:  # another user could have written the outcome: never retried
            log.warning("clustrix.outcome_refused", job_id=job.handle.job_id, error=str(exc))
            self._record_final(job, JobStatus(state=JobState.FAILED, reason=str(exc)))
            self._fail(job, exc)
            return
        except Exception as exc:  # noqa: BLE001 - stays watched: the next round polls and fetches again
            if not self._outages.failed(job.config, "clustrix.fetch_failed", exc, job_id=job.handle.job_id):
                self._failed_attempt(job, "fetch the results of", exc)
            return
        if retry.resubmit_lost(job, outcomes, status.state):  # retries=N: lost calls run again, same job
            return
        with self._lock:
            self._jobs.pop(job.handle.job_id, None)
        if status.counts is None:  # what the outcomes tell, for the registry and the progress bar
            failed = sum(1 for o in outcomes if o is None or not o.ok)
            counts = {"done": len(outcomes) - failed, "failed": failed, "running": 0, "pending": 0}
            status = attrs.evolve(status, counts=counts)
        job.status = status
        # the registry and the job dir are settled first: whoever .result() wakes sees them final
        self._record_final(job, status)
        if job.config.get("cleanup_on_success") and all(o is not None and o.ok for o in outcomes):
            self._remove_job_dir(job)
        stderr_tail = lambda: self._stderr_tail(job)  # noqa: E731 - read only if a call wrote no result
        if job.futures and job.futures[0].index is None:
            resolve_whole(job.futures[0], outcomes, job.handle, status, stderr_tail)
        else:
            resolve_futures(job.futures, outcomes, job.handle, status, stderr_tail)

    def _remove_job_dir(self, job: _ActiveJob) -> None:
        """``cleanup_on_success``: the scheduler deletes the job's directory once every call's result is home."""
        try:
            job.scheduler.remove_job_dir(job.handle, job.config)
        except Exception as exc:  # noqa: BLE001 - the results are home; a leftover directory is harmless
            log.warning(
                "clustrix.cleanup_failed", job_id=job.handle.job_id, job_dir=job.handle.job_dir, error=repr(exc)
            )

    def _stderr_tail(self, job: _ActiveJob) -> str:
        try:
            return tail(job.scheduler.read_logs(job.handle, job.config, "stderr"))
        except Exception:  # noqa: BLE001 - a missing log must not hide the real error
            return ""

    def _fail(self, job: _ActiveJob, error: BaseException) -> None:
        with self._lock:
            self._jobs.pop(job.handle.job_id, None)
        for future in job.futures:
            settle(future, error=error)

    def _record_final(self, job: _ActiveJob, status: JobStatus) -> None:
        self._record(job, status, final=True)

    def _record(self, job: _ActiveJob, status: JobStatus, *, final: bool) -> None:
        """Store the job's status in the registry (a running one's state and counts too, for ``clustrix jobs``)."""
        if job.scheduler.impl.persistent:
            from clustrix import registry

            try:
                (registry.update_state if final else registry.update_progress)(job.handle.job_id, status)
            except Exception as exc:  # noqa: BLE001 - the registry is a view; the job goes on
                log.warning("clustrix.registry_update_failed", job_id=job.handle.job_id, error=repr(exc))


_manager: JobManager | None = None
_manager_lock = threading.Lock()


def get_manager() -> JobManager:
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = JobManager()
        return _manager
