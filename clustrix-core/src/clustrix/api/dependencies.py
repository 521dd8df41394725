"""Futures passed as arguments: a call that takes another call's result depends on it.

``g.submit(f.submit(x))``, ``g.submit([f1, f2])``, ``g.submit(data={"a": f1})`` and
``g.map(f.submit_map(xs))`` (call *i* gets future *i*'s result) find the futures anywhere in
the arguments (lists, tuples and dicts). Two ways, chosen per submit:

- **On the cluster** (the futures' jobs run on the same cluster: same scheduler, host and
  work directory, and the scheduler holds jobs, :meth:`clustrix.batch.Dialect.dependency_options`):
  the job is submitted at once with the scheduler's own dependency, each future replaced by a
  placeholder the runner fills in from the upstream's outcome file. ``submit`` returns at once,
  and the pipeline finishes without this process.
- **In the client** (futures of another cluster, of the local executor, or a scheduler without
  dependencies): a background thread waits for the inputs and submits the calls with their
  values. This needs the submitting process alive until the last input is ready.

An input that failed makes the call raise :class:`clustrix.errors.DependencyError`, with the
input's exception as ``__cause__``. Cancelling an upstream cancels its dependants.
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from clustrix.api.futures import ClusterFuture, InlineFuture, get_manager
from clustrix.batch import dependencies as held_jobs
from clustrix.errors import DependencyError, JobError
from clustrix.log import get_logger
from clustrix.plugin.types import Dependency, JobHandle, JobStatus, ReadsInputsOnTheCluster
from clustrix.remote.inputs import placeholder

if TYPE_CHECKING:
    from clustrix.api.decorator import ClusterFunction
    from clustrix.config.settings import ClusterConfig

log = get_logger("clustrix.dependencies")
Arguments = Sequence[tuple[tuple[Any, ...], dict[str, Any]]]


def futures_in(obj: Any) -> Iterator[concurrent.futures.Future[Any]]:
    """Every future in ``obj``, looking into lists, tuples and dicts (exactly those types, as the runner does)."""
    kind = type(obj)
    if isinstance(obj, concurrent.futures.Future):
        yield obj
    elif kind is list or kind is tuple:
        for item in obj:
            yield from futures_in(item)
    elif kind is dict:
        for value in obj.values():
            yield from futures_in(value)


def replaced(obj: Any, put: Callable[[concurrent.futures.Future[Any]], Any]) -> Any:
    """``obj`` with every future ``f`` in it replaced by ``put(f)`` (containers rebuilt, the rest shared)."""
    kind = type(obj)
    if isinstance(obj, concurrent.futures.Future):
        return put(obj)
    if kind is list or kind is tuple:
        return kind(replaced(item, put) for item in obj)
    return {k: replaced(v, put) for k, v in obj.items()} if kind is dict else obj


def input_error(
    future: concurrent.futures.Future[Any], job_id: str | None = None, index: int | None = None
) -> DependencyError:
    """The error of a call whose input ``future`` (call ``index`` of job ``job_id``) failed or was cancelled."""
    job_id = getattr(future, "job_id", None) if job_id is None else job_id
    index = getattr(future, "index", None) if index is None else index
    cause: BaseException = (
        concurrent.futures.CancelledError() if future.cancelled() else future.exception() or RuntimeError()
    )
    what = "was cancelled" if future.cancelled() else f"failed: {type(cause).__name__}: {cause}"
    error = DependencyError(
        f"this call did not run: its input, call {index} of job {job_id}, {what}",
        job_id=job_id,
        upstream_job_id=job_id,
        upstream_call=index,
    )
    error.__cause__ = cause
    return error


def submit(
    function: ClusterFunction, arguments: Arguments, *, whole: bool, into: list[ClusterFuture] | None
) -> list[ClusterFuture] | None:
    """Submit calls whose arguments hold futures; None when they hold none (the caller submits as usual)."""
    found = {id(f): f for call in arguments for f in futures_in(call)}
    if not found:
        return None
    spec, scheduler = function._spec(arguments)
    group = (scheduler.name, *spec.config.connection_key, spec.config.get("remote_work_dir"))
    upstream = [f for f in found.values() if isinstance(f, ClusterFuture) and not isinstance(f, InlineFuture)]
    one_per_job = {f.job_id: f for f in upstream}.values()
    where = {f.job_id: _input_dir(scheduler.impl, f.handle, spec.config) for f in one_per_job}
    on_cluster = getattr(scheduler.impl, "holds_dependencies", False) and all(
        f in upstream and f.index is not None and f.handle.native_id and where[f.job_id] and f._job.group == group
        for f in found.values()
    )
    if not on_cluster:
        return chain(function, arguments, whole=whole, into=into)
    every = list({f.job_id for f in upstream})
    held_jobs.keep(every)  # before looking at done(): a directory must not go meanwhile
    failed = any(f.done() and (f.cancelled() or f.exception() is not None) for f in upstream)
    # a directory given up for removal just before keep(): its futures settle in a moment, so wait for
    # them in the chaining thread (here, on the poller's thread in a done-callback, they never would)
    if failed or any(held_jobs.removing(f.job_id) and not f.done() for f in upstream):
        held_jobs.forget(every)
        return chain(function, arguments, whole=whole, into=into)
    jobs: dict[str, ClusterFuture] = {}
    calls: dict[str, list[tuple[int, int]]] = {}
    new_arguments = []
    for i, call in enumerate(arguments):

        def put(f: concurrent.futures.Future[Any], i: int = i) -> Any:
            assert isinstance(f, ClusterFuture) and f.index is not None
            if f.done():
                return f.result()  # its value is here already (its directory may be cleaned up): no dependency
            jobs.setdefault(f.job_id, f)
            calls.setdefault(f.job_id, []).append((i, f.index))
            tasks = int(f.handle.data.get("tasks", 1))
            return placeholder(job_id=f.job_id, job_dir=str(where[f.job_id]), index=f.index, tasks=tasks, held=True)

        new_arguments.append(replaced(call, put))
    held_jobs.forget([job_id for job_id in every if job_id not in jobs])
    after = tuple(
        Dependency(
            job_id=job_id,
            native_id=str(f.handle.native_id),
            job_dir=str(where[job_id]),
            size=f.handle.size,
            tasks=int(f.handle.data.get("tasks", 1)),
            calls=tuple(sorted(set(calls[job_id]))),
            handle=f.handle,
        )
        for job_id, f in jobs.items()
    )
    spec = attrs.evolve(spec, arguments=new_arguments, dependencies=after)
    try:
        with function._naming_unpicklable(spec):
            futures = get_manager().submit(spec, scheduler, whole=whole, into=into)
    except BaseException:
        held_jobs.forget(list(jobs))
        raise
    if jobs:
        link(list(jobs.values()), futures)
    return futures


def _input_dir(impl: object, handle: JobHandle | None, config: ClusterConfig) -> str | None:
    """Where a dependant's runner reads ``handle``'s outcome files: the scheduler's ``input_dir``, else its job_dir."""
    if handle is None:
        return None
    if isinstance(impl, ReadsInputsOnTheCluster):
        return impl.input_dir(handle, config)
    return str(handle.job_dir) if handle.job_dir else None


def link(upstream: list[ClusterFuture], dependants: list[ClusterFuture]) -> None:
    """An upstream job that ends without results (cancelled, killed) cancels the dependant job; its
    directory goes (``cleanup_on_success``) once every dependant has read it."""
    job = dependants[0]._job
    every_upstream_future = {id(g): g for f in upstream for g in f._job.futures}.values()
    cancelling: list[concurrent.futures.Future[Any]] = []

    def upstream_done(future: concurrent.futures.Future[Any]) -> None:
        exc = None if future.cancelled() else future.exception()
        lost = future.cancelled() or (
            isinstance(exc, JobError) and not isinstance(exc, DependencyError) and exc.error_type is None
        )
        if lost and not cancelling and not all(d.done() for d in dependants):
            cancelling.append(future)  # once, not for each call of the upstream
            try:  # its futures stay: they end with a DependencyError naming the input
                job.scheduler.cancel(job.handle, job.config)
            except Exception as error:  # noqa: BLE001 - the scheduler drops it anyway where it can
                log.warning("clustrix.cancel_failed", job_id=job.handle.job_id, error=repr(error))

    for future in every_upstream_future:
        future.add_done_callback(upstream_done)
    remaining = [len(dependants)]

    def dependant_done(_: concurrent.futures.Future[Any]) -> None:
        remaining[0] -= 1
        if remaining[0]:
            return
        for f in upstream:
            if held_jobs.release(f.job_id) and f.done() and f._job.config.get("cleanup_on_success"):
                ok = all(g.done() and not g.cancelled() and g.exception() is None for g in f._job.futures)
                if ok:
                    get_manager()._remove_job_dir(f._job)

    for dependant in dependants:
        dependant.add_done_callback(dependant_done)


# ---- client-side chaining ----------------------------------------------------------------------
class ChainedFuture(InlineFuture):
    """The future of a call the client submits once its inputs are ready; ``job_id`` once submitted."""

    def __init__(self, index: int | None) -> None:
        super().__init__(index)
        self.target: ClusterFuture | None = None

    @property
    def job_id(self) -> str | None:  # type: ignore[override]
        return None if self.target is None else self.target.job_id

    @property
    def handle(self) -> JobHandle | None:  # type: ignore[override]
        return None if self.target is None else self.target.handle

    def cancel(self) -> bool:
        if self.target is not None:
            self.target.cancel()
        return concurrent.futures.Future.cancel(self)

    def __repr__(self) -> str:
        return f"<ChainedFuture job={self.job_id} index={self.index} state={self._state}>"


def chain(
    function: ClusterFunction, arguments: Arguments, *, whole: bool, into: list[ClusterFuture] | None
) -> list[ClusterFuture]:
    """Client-side chaining: return futures now; a thread submits the calls when their inputs are ready."""
    futures = [ChainedFuture(None)] if whole else [ChainedFuture(i) for i in range(len(arguments))]
    if into is not None:
        into.extend(futures)
    inputs = list({id(f): f for call in arguments for f in futures_in(call)}.values())
    thread = threading.Thread(
        target=_run_chain, args=(function, arguments, inputs, futures, whole), name="clustrix-chain", daemon=True
    )
    thread.start()
    return list(futures)


def _run_chain(
    function: ClusterFunction,
    arguments: Arguments,
    inputs: list[concurrent.futures.Future[Any]],
    futures: list[ChainedFuture],
    whole: bool,
) -> None:
    ended = threading.Semaphore(0)  # not concurrent.futures.wait: it misses a future cancelled by .cancel() alone
    for future in inputs:
        future.add_done_callback(lambda _: ended.release())
    for _ in inputs:
        ended.acquire()
    ready, errors = [], {}
    for i, call in enumerate(arguments):
        bad = next((f for f in futures_in(call) if f.cancelled() or f.exception() is not None), None)
        if bad is not None:
            errors[i] = input_error(bad)
        else:
            ready.append((i, replaced(call, lambda f: f.result())))
    if whole and errors:
        _set_error(futures[0], next(iter(errors.values())))
        return
    for i, error in errors.items():
        _set_error(futures[i], error)
    wanted = [(i, call) for i, call in ready if whole or not futures[i].done()]
    if not wanted:
        return
    try:
        submitted = function._submit([call for _, call in wanted], whole=whole)
    except BaseException as exc:  # noqa: BLE001 - the submit's error is every waiting call's error
        for i, _ in wanted:
            _set_error(futures[0 if whole else i], exc)
        return
    for (i, _), target in zip(wanted, submitted, strict=False):
        mine = futures[0 if whole else i]
        mine.target = target
        if mine.cancelled():
            target.cancel()
        target.add_done_callback(functools.partial(_forward, mine=mine))


def _forward(target: concurrent.futures.Future[Any], mine: ChainedFuture) -> None:
    if target.cancelled():
        concurrent.futures.Future.cancel(mine)
    elif target.exception() is not None:
        _set_error(mine, target.exception())  # type: ignore[arg-type]
    else:
        try:
            mine.set_result(target.result())
        except concurrent.futures.InvalidStateError:
            pass


def _set_error(future: concurrent.futures.Future[Any], error: BaseException) -> None:
    try:
        future.set_exception(error)
    except concurrent.futures.InvalidStateError:
        pass  # cancelled meanwhile


# ---- a dependant that ended without results ----------------------------------------------------
def upstream_error(handle: JobHandle, index: int | None, status: JobStatus) -> DependencyError | None:
    """The DependencyError of call ``index`` of a dependant that ended without a result, if an input failed.

    The scheduler dropped the job (SLURM's kill-on-invalid-dep, PBS's afterok) or the client
    cancelled it because an upstream ended without results: name the input, with its error as cause.
    """
    from clustrix.api.job import Job

    for entry in handle.data.get("after") or []:
        mine = [j for i, j in entry.get("calls", []) if index is None or i == index]
        if not mine:
            continue
        try:
            upstream = Job.attach(entry["job"]).futures(timeout=60)
        except Exception as exc:  # noqa: BLE001 - not known here: the dependant's own error stands
            log.debug("clustrix.upstream_unknown", job_id=entry["job"], error=repr(exc))
            continue
        failed = [j for j in mine if j < len(upstream) and upstream[j].exception() is not None]
        if not failed:  # a whole-array dependency: another call of the upstream failed
            failed = [j for j, f in enumerate(upstream) if f.exception() is not None]
        if failed:
            return input_error(upstream[failed[0]], entry["job"], failed[0])
    return None
