"""``clustrix.Job``: a registered job seen from any process, e.g. after the submitter died."""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any

from clustrix import registry
from clustrix.api import retry
from clustrix.api.outcomes import resolve_futures, tail
from clustrix.config.settings import ClusterConfig, resolve_config
from clustrix.plugin.manager import RegisteredScheduler, get_scheduler
from clustrix.plugin.types import JobHandle, JobState, JobStatus


class Job:
    """A job from the registry: status, wait, result, cancel and logs.

    ``Job.attach(job_id)`` works from any Python process of the same user, so a result
    written remotely can be fetched after the submitting process is gone.
    """

    def __init__(self, record: registry.JobRecord) -> None:
        self.record = record
        self.handle: JobHandle = record.handle
        secrets = resolve_config().as_dict(include_secrets=True)
        # the stored configuration, plus secrets that are never stored (a password)
        values = {**record.config, **{k: v for k, v in secrets.items() if k not in record.config}}
        self.config = ClusterConfig(values)
        self._scheduler: RegisteredScheduler | None = None

    @classmethod
    def attach(cls, job_id: str) -> Job:
        """The registered job ``job_id`` (a unique prefix is enough)."""
        return cls(registry.get(job_id))

    @property
    def job_id(self) -> str:
        return self.handle.job_id

    @property
    def scheduler(self) -> RegisteredScheduler:
        if self._scheduler is None:
            self._scheduler = get_scheduler(self.handle.scheduler)
        return self._scheduler

    def status(self) -> JobStatus:
        """Ask the scheduler now (one poll) and store the answer (state, call counts) in the registry.

        A job the registry already holds as final is not asked again: a final state never
        changes, and a scheduler may still list a job it has just cancelled as completing.
        """
        if self.record.state.final:
            return JobStatus(state=self.record.state, reason=self.record.reason)
        status = self.scheduler.poll([self.handle], self.config).get(self.job_id)
        if status is None:
            return JobStatus(state=JobState(self.record.state.value), reason=self.record.reason)
        if status.state.final:
            registry.update_state(self.job_id, status)
        elif status != JobStatus(state=self.record.state, reason=self.record.reason, counts=self.record.counts):
            registry.update_progress(self.job_id, status)
        return status

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Block until the job is final; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = 0.1
        while True:
            status = self.status()
            if status.state.final:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.job_id} is still {status.state.value} after {timeout} s")
            time.sleep(interval)
            interval = min(interval * 1.5, float(self.config.get("job_poll_interval", 1.0)))

    def results(self, timeout: float | None = None) -> list[Any]:
        """Every call's result in order (an array job); raises the first call's error."""
        return [f.result() for f in self.futures(timeout)]

    def result(self, timeout: float | None = None) -> Any:
        """The result of a single call, or of the first call of an array (its error, if it failed)."""
        return self._resolved(timeout, 1)[0].result()

    def futures(self, timeout: float | None = None) -> list[concurrent.futures.Future[Any]]:
        """One finished future per call, in order, once the job is final: each holds a value or an error."""
        return self._resolved(timeout, self.handle.size)

    def _resolved(self, timeout: float | None, count: int) -> list[concurrent.futures.Future[Any]]:
        """Futures set from the first ``count`` calls' outcomes, once the job is final."""
        status = self.wait(timeout)
        outcomes = self.scheduler.fetch(self.handle, self.config)[:count]
        futures: list[concurrent.futures.Future[Any]] = [concurrent.futures.Future() for _ in range(count)]
        resolve_futures(futures, outcomes, self.handle, status, lambda: tail(self.logs("stderr")))
        return futures

    def retry_failed(self) -> list[int]:
        """Run the calls of this finished job that raised or were lost again, in the same job; those calls.

        Only those calls run (see :mod:`clustrix.batch.retry`); the job keeps its id, so
        :meth:`results` then waits for them and returns every call's result in order. Nothing
        failed: nothing is submitted (``[]``). A job that has not finished is refused.
        """
        status = self.status()
        if not status.state.final:
            raise RuntimeError(f"job {self.job_id} is {status.state.value}: wait for it to finish, then retry")
        outcomes = self.scheduler.fetch(self.handle, self.config)
        _handle, calls = retry.retry_failed(self.scheduler, self.handle, self.config, outcomes)
        if calls:
            self.record = registry.get(self.job_id)
            self.handle = self.record.handle
        return calls

    def cancel(self) -> bool:
        cancelled = self.scheduler.cancel(self.handle, self.config)
        if cancelled:
            registry.update_state(self.job_id, JobStatus(state=JobState.CANCELLED, reason="cancelled by the user"))
        return cancelled

    def logs(self, stream: str = "stdout") -> str:
        return self.scheduler.read_logs(self.handle, self.config, stream)

    def __repr__(self) -> str:
        return f"<Job {self.job_id} {self.handle.scheduler} {self.record.name}>"
