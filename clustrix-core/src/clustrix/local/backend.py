"""The local backend: the machine's own cores, registered as an ordinary plugin (``local``).

CPU-bound work runs in a reused process pool (:mod:`clustrix.local.pool`: cloudpickle carries
lambdas, closures and functions defined in ``__main__`` or a notebook; a call that kills
its worker fails alone; cancelling kills the running calls); I/O-bound work, or
``executor="thread"``, runs in a thread pool. A ``.map()`` is split into a few chunks
per worker so that thousands of tiny calls cost a handful of round trips.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import functools
import inspect
import os
import queue
import re
import textwrap
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from clustrix.api.decorator import ClusterFunction, mark_worker_thread
from clustrix.api.retry import with_retries
from clustrix.config.settings import ClusterConfig
from clustrix.errors import JobLostError
from clustrix.local.pool import PoolJob, ProcessPool
from clustrix.plugin.dryrun import DryRun
from clustrix.plugin.hookspecs import hookimpl
from clustrix.plugin.types import JobHandle, JobSpec, JobState, JobStatus, Outcome, Outcomes
from clustrix.remote.jobdir import decode_outcome, plan_tasks
from clustrix.remote.runner import type_name

#: Names whose use in a function's source makes ``executor="auto"`` choose threads, as the
#: original clustrix did: the function mostly waits on files, sockets or other programs.
_IO_PATTERN = re.compile(
    r"\b(open|requests|urllib|urlopen|httpx|aiohttp|socket|subprocess|sleep|boto3|paramiko|ftplib|smtplib)\b"
)
_CHUNKS_PER_WORKER = 4


def uses_io(func: Callable[..., Any]) -> bool:
    """True if ``func``'s source mentions file, network, process or sleep calls."""
    func = inspect.unwrap(func)
    while isinstance(func, functools.partial):  # a method of an instance (see ClusterFunction.__get__)
        func = inspect.unwrap(func.func)
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except Exception:  # noqa: BLE001 - no source, or lines that are not its source (exec'd code: TokenError on 3.12+)
        return False
    return bool(_IO_PATTERN.search(source))


def choose_executor(func: Callable[..., Any], executor: str) -> str:
    """``"process"`` or ``"thread"`` for ``executor`` in ``auto``/``process``/``thread``."""
    if executor in {"process", "thread"}:
        return executor
    if executor != "auto":
        raise ValueError(f"executor={executor!r} is not valid: use 'auto', 'process' or 'thread'")
    return "thread" if uses_io(func) else "process"


def default_workers(requested: int | None = None) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(requested, cpus) if requested else cpus)


class _ThreadPool:
    """Up to ``workers`` daemon threads running submitted functions, started as calls come.

    ``concurrent.futures.ThreadPoolExecutor`` joins its threads when the interpreter exits,
    so after a Ctrl-C the process would hang until every running call returned. These
    threads are daemons: the exit waits (in :meth:`_Pools.shutdown`) only for the calls
    of jobs nobody cancelled, and a cancelled job's running calls end with the process.
    """

    def __init__(self, workers: int) -> None:
        self.max_workers = workers
        self._queue: queue.SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]]]
        self._queue = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads = 0
        #: calls the exit waits for: submitted, not finished, their job not cancelled
        self._awaited: set[concurrent.futures.Future[Any]] = set()

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            self._awaited.add(future)
        future.add_done_callback(self._settled)
        self._queue.put((future, fn, args))
        if not self._idle.acquire(blocking=False):
            with self._lock:
                start = self._threads < self.max_workers
                self._threads += start
            if start:
                threading.Thread(target=self._work, name="clustrix-local", daemon=True).start()
        return future

    def forget(self, futures: Iterable[concurrent.futures.Future[Any]]) -> None:
        """The exit no longer waits for ``futures`` (their job was cancelled; a running thread cannot be stopped)."""
        with self._lock:
            self._awaited.difference_update(futures)

    def awaited(self) -> list[concurrent.futures.Future[Any]]:
        with self._lock:
            return list(self._awaited)

    def _settled(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._awaited.discard(future)

    def _work(self) -> None:
        mark_worker_thread()  # a decorated function called by a call runs inline in this thread
        while True:
            future, fn, args = self._queue.get()
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args)
                except BaseException as exc:  # noqa: BLE001 - carried to the future, as the executor does
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del future, fn, args
            self._idle.release()


class _Pools:
    """Process and thread pools, reused across calls (starting processes is the slow part)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.processes: dict[int, ProcessPool] = {}
        self.threads: dict[int, _ThreadPool] = {}

    def process_pool(self, workers: int) -> ProcessPool:
        with self.lock:
            pool = self.processes.get(workers)
            if pool is None or pool.closed:
                pool = self.processes[workers] = ProcessPool(workers)
            return pool

    def thread_pool(self, workers: int) -> _ThreadPool:
        with self.lock:
            pool = self.threads.get(workers)
            if pool is None:
                pool = self.threads[workers] = _ThreadPool(workers)
            return pool

    def shutdown(self) -> None:
        """At exit: let submitted calls finish; a Ctrl-C while waiting stops every worker at once.

        Calls of a cancelled job (a Ctrl-C while waiting for it cancels it) are not waited for.
        """
        with self.lock:
            processes, self.processes = list(self.processes.values()), {}
            threads, self.threads = list(self.threads.values()), {}
        try:
            for threads_pool in threads:
                concurrent.futures.wait(threads_pool.awaited())
            for pool in processes:
                pool.shutdown(wait=True)
        finally:
            for pool in processes:
                pool.shutdown(wait=False)
            # the threads are daemons: calls still running in them end with the interpreter


_pools = _Pools()
atexit.register(_pools.shutdown)


def _run_in_thread(
    func: Callable[..., Any], arguments: Sequence[tuple[tuple[Any, ...], dict[str, Any]]]
) -> list[Outcome]:
    """Threads share memory: outcomes are built directly, nothing is pickled."""
    outcomes = []
    for args, kwargs in arguments:
        try:
            outcomes.append(Outcome(ok=True, value=func(*args, **kwargs)))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - SystemExit too, as in a process: carried to the future
            outcomes.append(
                Outcome(
                    ok=False,
                    exception=exc,
                    error_type=type_name(exc),
                    error_message=str(exc),
                    traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
                )
            )
    return outcomes


@attrs.define
class _LocalJob:
    kind: str
    chunks: list[list[int]]
    #: the thread pool's futures, one per chunk
    futures: list[concurrent.futures.Future[Any]] = attrs.field(factory=list)
    #: the process pool's job and pool
    pool_job: PoolJob | None = None
    pool: ProcessPool | None = None
    threads: _ThreadPool | None = None


def _crash_outcome(job_id: str, index: int, cause: str) -> Outcome:
    error = JobLostError(
        f"call {index} of job {job_id} killed its worker process; the other calls are not affected "
        "and a new worker took its place",
        job_id=job_id,
        state=JobState.FAILED,
        reason=cause,
    )
    return Outcome(ok=False, exception=error, error_type=type_name(error), error_message=str(error))


def _failed_outcome(job_id: str, index: int, result: tuple[bool | None, Any]) -> Outcome:
    ok, value = result
    return _crash_outcome(job_id, index, value) if ok is None else decode_outcome(value)


def _pool_status(pool_job: PoolJob, pool: ProcessPool) -> JobStatus:
    results = pool_job.results
    ok = sum(1 for r in results if r is not None and r[0] is True)
    finished = len(results) - pool_job.remaining
    running = 0 if pool_job.done.is_set() else pool.running(pool_job)
    counts = {
        "done": ok,
        "failed": finished - ok,
        "running": running,
        "pending": len(results) - finished - running,
    }
    if not pool_job.done.is_set():
        return JobStatus(state=JobState.RUNNING if pool_job.started else JobState.PENDING, counts=counts)
    if pool_job.cancelled:
        return JobStatus(state=JobState.CANCELLED, reason="cancelled by the user", counts=counts)
    crashes = [value for flag, value in filter(None, results) if flag is None]
    if crashes:
        reason = f"a call killed its worker process ({crashes[0]})"
        return JobStatus(state=JobState.FAILED, reason=reason, counts=counts)
    return JobStatus(state=JobState.COMPLETED, exit_code=0, counts=counts)


class LocalScheduler:
    """Runs jobs in this machine's process or thread pools. Jobs end with this process."""

    #: Local jobs cannot be attached to from another process, so they are not recorded.
    persistent = False
    #: Local jobs share this interpreter's environment: nothing to capture or rebuild.
    needs_environment = False
    #: Calls run in this interpreter's workers, never in another Python.
    python_needs: tuple[str, ...] = ()
    #: Only core's resources (``cores`` sizes the pool); no keyword of its own.
    resource_keys: Mapping[str, str] = {}

    def __init__(self) -> None:
        self._jobs: dict[str, _LocalJob] = {}
        self._lock = threading.Lock()

    @hookimpl
    def clustrix_submit(self, spec: JobSpec, wake: Callable[[], None]) -> JobHandle:
        config = spec.config
        executor = config.get("executor", "auto")
        kind = choose_executor(spec.func, executor)
        requested = config.get("max_workers") or spec.resources.cores
        workers = default_workers(requested)
        chunks = plan_tasks(spec.size, workers * _CHUNKS_PER_WORKER if spec.size > 1 else 1)
        func = with_retries(inspect.unwrap(spec.func), config)
        if kind == "process":
            pool = _pools.process_pool(workers)
            pool_job = PoolJob(spec.size, wake)
            pool.submit(pool_job, func, chunks, spec.arguments)
            job = _LocalJob(kind, chunks, pool_job=pool_job, pool=pool)
        else:
            threads = _pools.thread_pool(workers)
            job = _LocalJob(kind, chunks, threads=threads)
            for chunk in chunks:
                future = threads.submit(_run_in_thread, func, [spec.arguments[i] for i in chunk])
                future.add_done_callback(lambda _f: wake())
                job.futures.append(future)
        with self._lock:
            self._jobs[spec.job_id] = job
        return JobHandle(
            job_id=spec.job_id, scheduler="local", size=spec.size, host="localhost", data={"executor": kind}
        )

    @hookimpl
    def clustrix_dry_run(self, spec: JobSpec) -> DryRun:
        """Local calls run in this Python's workers: there is no script or command to show, only the plan."""
        config = spec.config
        executor = config.get("executor", "auto")
        kind = choose_executor(spec.func, executor)
        requested = config.get("max_workers") or spec.resources.cores
        workers = default_workers(requested)
        return DryRun(
            scheduler="local",
            job_id=spec.job_id,
            calls=spec.size,
            tasks=min(spec.size, workers),
            notes=(
                f"the local executor has no job script and no submit command: the calls run in {workers} "
                f"{kind} worker(s) of this Python (executor={executor!r}); set cluster_type to see a cluster's script",
            ),
        )

    def _job(self, handle: JobHandle) -> _LocalJob | None:
        with self._lock:
            return self._jobs.get(handle.job_id)

    @hookimpl
    def clustrix_poll(self, handles: Sequence[JobHandle]) -> Mapping[str, JobStatus]:
        return {handle.job_id: self._status(handle) for handle in handles}

    def _status(self, handle: JobHandle) -> JobStatus:
        job = self._job(handle)
        if job is None:
            return JobStatus(state=JobState.FAILED, reason="not a job of this process")
        if job.pool_job is not None and job.pool is not None:
            return _pool_status(job.pool_job, job.pool)
        if not all(f.done() for f in job.futures):
            running = any(f.running() for f in job.futures)
            return JobStatus(state=JobState.RUNNING if running else JobState.PENDING)
        if all(f.cancelled() for f in job.futures):
            return JobStatus(state=JobState.CANCELLED, reason="cancelled before it started")
        errors = [f.exception() for f in job.futures if not f.cancelled() and f.exception() is not None]
        if errors:
            return JobStatus(state=JobState.FAILED, reason=f"{type(errors[0]).__name__}: {errors[0]}")
        return JobStatus(state=JobState.COMPLETED, exit_code=0)

    @hookimpl
    def clustrix_fetch(self, handle: JobHandle) -> Sequence[Outcome | None]:
        with self._lock:
            job = self._jobs.pop(handle.job_id, None)
        outcomes: list[Outcome | None] = [None] * handle.size
        if job is None:
            return outcomes
        if job.pool_job is not None:
            return Outcomes(job.pool_job.results, functools.partial(_failed_outcome, handle.job_id))
        for chunk, future in zip(job.chunks, job.futures, strict=True):
            if future.cancelled() or future.exception() is not None:
                continue
            for index, outcome in zip(chunk, future.result(), strict=True):
                outcomes[index] = outcome
        return outcomes

    @hookimpl
    def clustrix_cancel(self, handle: JobHandle) -> bool:
        """Drop the calls that have not started; on processes, kill the running ones too.

        A call running in a thread cannot be stopped: it finishes, and its result is dropped.
        """
        job = self._job(handle)
        if job is None:
            return False
        if job.pool is not None and job.pool_job is not None:
            job.pool.cancel(job.pool_job)
            stopped = True
        else:
            stopped = all([f.cancel() or f.done() for f in job.futures])
            if job.threads is not None:
                job.threads.forget(job.futures)  # the exit does not wait for calls nobody wants
        if stopped:  # nothing will fetch a cancelled job: forget it here
            with self._lock:
                self._jobs.pop(handle.job_id, None)
        return stopped

    @hookimpl
    def clustrix_read_logs(self) -> str:
        return ""


@hookimpl
def clustrix_register_schedulers(register: Callable[[str, object], None]) -> None:
    register("local", LocalScheduler())


def execute_loop_parallel(
    func: Callable[..., Any],
    loop_var: str,
    iterable: Iterable[Any],
    *,
    func_args: Sequence[Any] = (),
    func_kwargs: Mapping[str, Any] | None = None,
    executor: str = "auto",
    max_workers: int | None = None,
) -> list[Any]:
    """Run ``func(*func_args, **func_kwargs, loop_var=item)`` for every item, in parallel, in order.

    The original clustrix's loop helper: the loop over ``iterable`` is split into chunks
    that run on the local cores (processes, or threads for I/O-bound functions).
    """
    kwargs = dict(func_kwargs or {})
    if loop_var in kwargs:
        raise ValueError(f"loop_var={loop_var!r} is also given in func_kwargs; pass it only as loop_var")
    bound = _LocalOnly(
        _LoopBody(func, loop_var, tuple(func_args), kwargs),
        config_overrides={
            "cluster_type": "local",
            "executor": choose_executor(func, executor),
            "max_workers": max_workers,
        },
    )
    return bound.map(iterable)


class _LocalOnly(ClusterFunction):
    """A function pinned to the local cores: its own keys win over CLUSTRIX_* variables too."""

    def config(self) -> ClusterConfig:
        config = super().config()
        return attrs.evolve(config, values={**config.values, **self.config_overrides})


@attrs.frozen
class _LoopBody:
    """``func`` with the loop variable bound by keyword; picklable when ``func`` is."""

    func: Callable[..., Any]
    loop_var: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def __call__(self, item: Any) -> Any:
        return self.func(*self.args, **{**self.kwargs, self.loop_var: item})
