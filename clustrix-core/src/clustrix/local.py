"""The local backend: the machine's own cores, registered as an ordinary plugin (``local``).

CPU-bound work runs in a reused process pool (cloudpickle carries lambdas, closures and
functions defined in ``__main__`` or a notebook); I/O-bound work, or
``executor="thread"``, runs in a thread pool. A ``.map()`` is split into a few chunks
per worker so that thousands of tiny calls cost a handful of round trips.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import inspect
import multiprocessing
import os
import pickle
import re
import sys
import textwrap
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from clustrix import runner
from clustrix.config import ClusterConfig
from clustrix.decorator import ClusterFunction
from clustrix.hookspecs import hookimpl
from clustrix.jobdir import decode_outcome, plan_tasks
from clustrix.jobs import JobHandle, JobSpec, JobState, JobStatus, Outcome
from clustrix.runner import encode_outcome_error, type_name, unwrap

#: Names whose use in a function's source makes ``executor="auto"`` choose threads, as the
#: original clustrix did: the function mostly waits on files, sockets or other programs.
_IO_PATTERN = re.compile(
    r"\b(open|requests|urllib|urlopen|httpx|aiohttp|socket|subprocess|sleep|boto3|paramiko|ftplib|smtplib)\b"
)
_CHUNKS_PER_WORKER = 4


def uses_io(func: Callable[..., Any]) -> bool:
    """True if ``func``'s source mentions file, network, process or sleep calls."""
    func = inspect.unwrap(func)
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
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


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start worker processes without re-running the user's script in them.

    forkserver and spawn workers normally re-import ``__main__`` (as ``__mp_main__``),
    which re-runs a script's top-level code: without an ``if __name__ == "__main__":``
    guard that code submits again and the pool breaks. Calls travel with cloudpickle,
    which carries functions and classes of ``__main__`` by value, so the workers do not
    need the script: hide its path while processes start.
    """
    main = sys.modules.get("__main__")
    saved = getattr(main, "__file__", None)
    if main is None or saved is None:
        yield
        return
    with _hide_lock:
        del main.__file__
        try:
            yield
        finally:
            main.__file__ = saved


_hide_lock = threading.Lock()


class _Pools:
    """Process and thread pools, reused across calls (starting processes is the slow part)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pools: dict[tuple[str, int], concurrent.futures.Executor] = {}

    def get(self, kind: str, workers: int) -> concurrent.futures.Executor:
        with self.lock:
            pool = self.pools.get((kind, workers))
            if pool is None:
                if kind == "process":
                    method = "forkserver" if sys.platform.startswith("linux") else "spawn"
                    pool = concurrent.futures.ProcessPoolExecutor(
                        max_workers=workers, mp_context=multiprocessing.get_context(method)
                    )
                else:
                    pool = concurrent.futures.ThreadPoolExecutor(
                        max_workers=workers, thread_name_prefix="clustrix-local"
                    )
                self.pools[(kind, workers)] = pool
            return pool

    def discard(self, pool: concurrent.futures.Executor) -> None:
        with self.lock:
            for key, value in list(self.pools.items()):
                if value is pool:
                    del self.pools[key]
        pool.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        with self.lock:
            pools, self.pools = list(self.pools.values()), {}
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)


_pools = _Pools()
atexit.register(_pools.shutdown)


def _run_chunk(payload: bytes) -> bytes:
    """What a worker process runs: a chunk of calls, with one pickle for all their results.

    Encoding each result on its own cost more than the tiny calls themselves; errors are
    encoded per call (type, message, traceback), and a value that cannot be pickled
    becomes that call's ``TypeError``, as in the remote runner.
    """
    func, arguments = pickle.loads(payload)
    func = unwrap(func)
    values: list[Any] = []
    errors: dict[int, bytes] = {}
    for index, (args, kwargs) in enumerate(arguments):
        try:
            values.append(func(*args, **kwargs))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - carried to the caller's future
            values.append(None)
            errors[index] = encode_outcome_error(exc)
    try:
        data: bytes = runner.dumps((values, errors))
    except Exception:  # noqa: BLE001 - find the values that cannot travel and report them per call
        for index, value in enumerate(values):
            if index in errors:
                continue
            try:
                runner.dumps(value)
            except Exception as exc:  # noqa: BLE001
                values[index] = None
                message = f"the function's return value could not be pickled: {type(exc).__name__}: {exc}"
                errors[index] = encode_outcome_error(TypeError(message))
        data = runner.dumps((values, errors))
    return data


def _decode_chunk(data: bytes) -> list[Outcome]:
    values, errors = pickle.loads(data)
    return [decode_outcome(errors[i]) if i in errors else Outcome(ok=True, value=v) for i, v in enumerate(values)]


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
    pool: concurrent.futures.Executor
    chunks: list[list[int]]
    futures: list[concurrent.futures.Future[Any]]


class LocalScheduler:
    """Runs jobs in this machine's process or thread pools. Jobs end with this process."""

    #: Local jobs cannot be attached to from another process, so they are not recorded.
    persistent = False
    #: Local jobs share this interpreter's environment: nothing to capture or rebuild.
    needs_environment = False

    def __init__(self) -> None:
        self._jobs: dict[str, _LocalJob] = {}
        self._lock = threading.Lock()

    @hookimpl
    def clustrix_submit(self, spec: JobSpec, wake: Callable[[], None]) -> JobHandle:
        config = spec.config
        executor = config.get("executor", "auto") if config is not None else "auto"
        kind = choose_executor(spec.func, executor)
        requested = (config.get("max_workers") if config is not None else None) or spec.resources.cores
        workers = default_workers(requested)
        pool = _pools.get(kind, workers)
        chunks = plan_tasks(spec.size, workers * _CHUNKS_PER_WORKER if spec.size > 1 else 1)
        func = inspect.unwrap(spec.func)
        futures: list[concurrent.futures.Future[Any]] = []
        future: concurrent.futures.Future[Any]
        hidden = _main_module_hidden() if kind == "process" else contextlib.nullcontext()
        try:
            with hidden:
                for chunk in chunks:
                    arguments = [spec.arguments[i] for i in chunk]
                    if kind == "process":
                        payload = runner.dumps((func, arguments))
                        future = pool.submit(_run_chunk, payload)
                    else:
                        future = pool.submit(_run_in_thread, func, arguments)
                    future.add_done_callback(lambda _f: wake())
                    futures.append(future)
        except concurrent.futures.process.BrokenProcessPool:
            _pools.discard(pool)
            raise
        with self._lock:
            self._jobs[spec.job_id] = _LocalJob(kind, pool, chunks, futures)
        return JobHandle(
            job_id=spec.job_id, scheduler="local", size=spec.size, host="localhost", data={"executor": kind}
        )

    def _job(self, handle: JobHandle) -> _LocalJob | None:
        with self._lock:
            return self._jobs.get(handle.job_id)

    @hookimpl
    def clustrix_poll(self, handles: Sequence[JobHandle]) -> Mapping[str, JobStatus]:
        statuses: dict[str, JobStatus] = {}
        for handle in handles:
            job = self._job(handle)
            if job is None:
                statuses[handle.job_id] = JobStatus(state=JobState.FAILED, reason="not a job of this process")
                continue
            if not all(f.done() for f in job.futures):
                running = any(f.running() for f in job.futures)
                statuses[handle.job_id] = JobStatus(state=JobState.RUNNING if running else JobState.PENDING)
            elif all(f.cancelled() for f in job.futures):
                statuses[handle.job_id] = JobStatus(state=JobState.CANCELLED, reason="cancelled before it started")
            else:
                errors = [f.exception() for f in job.futures if not f.cancelled() and f.exception() is not None]
                if errors:
                    if isinstance(errors[0], concurrent.futures.process.BrokenProcessPool):
                        _pools.discard(job.pool)
                    reason = f"{type(errors[0]).__name__}: {errors[0]}"
                    statuses[handle.job_id] = JobStatus(state=JobState.FAILED, reason=reason)
                else:
                    statuses[handle.job_id] = JobStatus(state=JobState.COMPLETED, exit_code=0)
        return statuses

    @hookimpl
    def clustrix_fetch(self, handle: JobHandle) -> Sequence[Outcome | None]:
        with self._lock:
            job = self._jobs.pop(handle.job_id, None)
        outcomes: list[Outcome | None] = [None] * handle.size
        if job is None:
            return outcomes
        for chunk, future in zip(job.chunks, job.futures, strict=True):
            if future.cancelled() or future.exception() is not None:
                continue
            result = future.result()
            chunk_outcomes = _decode_chunk(result) if isinstance(result, bytes) else result
            for index, outcome in zip(chunk, chunk_outcomes, strict=True):
                outcomes[index] = outcome
        return outcomes

    @hookimpl
    def clustrix_cancel(self, handle: JobHandle) -> bool:
        job = self._job(handle)
        if job is None:
            return False
        stopped = all([f.cancel() or f.done() for f in job.futures])
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
