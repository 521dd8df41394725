"""``clustrix.Executor``: a ``concurrent.futures.Executor`` over ``@cluster``."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from clustrix.api.decorator import ClusterFunction, split_options
from clustrix.api.futures import ClusterFuture, InlineFuture
from clustrix.api.progress import count as count_with_progress
from clustrix.api.progress import wanted as wanted_progress


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` that runs calls where clustrix is configured to.

    ``Executor(cores=4, memory="8GB", profile="hpc")`` takes the same keywords as
    ``@cluster``. ``map`` submits one job array and yields results in order.
    """

    def __init__(self, **options: Any) -> None:
        self._resources, self._overrides, self._profile = split_options(options)
        self._futures: set[concurrent.futures.Future[Any]] = set()
        self._lock = threading.Lock()
        self._shutdown = False

    def _function(self, fn: Callable[..., Any]) -> ClusterFunction:
        if isinstance(fn, ClusterFunction):
            fn = fn.func
        return ClusterFunction(fn, resources=self._resources, config_overrides=self._overrides, profile=self._profile)

    def _track(self, futures: list[ClusterFuture]) -> None:
        with self._lock:
            self._futures.update(futures)
        for future in futures:
            future.add_done_callback(self._untrack)

    def _untrack(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._futures.discard(future)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> ClusterFuture:
        """Submit ``fn(*args, **kwargs)``; return its future."""
        if self._shutdown:
            raise RuntimeError("cannot submit after shutdown")
        future = self._function(fn).submit(*args, **kwargs)
        self._track([future])
        return future

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        progress: bool | None = None,
    ) -> Iterator[Any]:
        """Submit one call per item as one job array; yield the results in order.

        ``chunksize`` is accepted for compatibility: packing is the scheduler's business.
        A progress bar counts the calls as they finish, as for ``.map()`` of a function.
        """
        if self._shutdown:
            raise RuntimeError("cannot submit after shutdown")
        function = self._function(fn)
        futures = function.submit_map(*iterables)
        self._track(futures)
        if futures and not isinstance(futures[0], InlineFuture) and wanted_progress(progress, futures[0]._job.config):
            count_with_progress(futures, getattr(function.func, "__qualname__", "map"))
        deadline = None if timeout is None else time.monotonic() + timeout

        def results() -> Iterator[Any]:
            for future in futures:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                yield future.result(remaining)

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; optionally cancel pending ones and wait for the rest."""
        self._shutdown = True
        with self._lock:
            pending = list(self._futures)
        if cancel_futures:
            for future in pending:
                future.cancel()
        if wait:
            concurrent.futures.wait(pending)
