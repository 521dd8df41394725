"""The local executor's process pool: reused workers, crash isolation and prompt cancellation.

``concurrent.futures.ProcessPoolExecutor`` breaks as a whole when one worker dies (every
pending call then fails with ``BrokenProcessPool``) and cannot stop a call once it has
started. This pool gives each worker its own pipe, so it always knows which chunk of
calls a worker is running, and each worker a shared counter naming the call it is in:

- a call that kills its worker (segfault, ``os._exit``, SIGKILL, the OOM killer) fails
  alone with a :class:`clustrix.JobLostError` naming the exit code or signal; the calls
  after it in the chunk run on another worker, and a new worker replaces the dead one.
  A worker sends its results at least every ``FLUSH_SECONDS``, so only the calls that
  finished in the last ``FLUSH_SECONDS`` before a crash can run a second time;
- cancelling a job drops its queued chunks and kills (SIGKILL) the workers running it;
- workers ignore SIGINT: Ctrl-C in a terminal reaches the whole process group, and the
  caller, not each worker, decides what an interrupt stops.

Workers are fresh interpreters (the ``spawn`` start method, as joblib's loky does, on
every platform): nothing of the caller is forked, so its threads (a notebook kernel's,
tqdm's monitor, a logging handler's) and the locks they hold, CUDA or BLAS state, open
sockets and pipes, and seeded random generators never reach a worker. ``fork`` would
start a worker in a few milliseconds, but is unsafe in a threaded caller and on macOS;
``forkserver`` forks every worker from one server process, which costs the same at the
first call (the server is itself a fresh interpreter that imports the runner) and, measured
here, ran CPU-bound calls a few percent slower than fresh interpreters (every worker
inherits the server's memory layout). A spawned worker imports only this module and the
runner. Calls travel as cloudpickle bytes, a chunk of calls per message.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

#: A worker sends what it has at least this often, so a crash loses at most this much finished work.
FLUSH_SECONDS = 0.02
#: An idle worker checks this often whether its caller is still alive.
PARENT_CHECK_SECONDS = 1.0
#: Chunks in flight per worker while chunks are short: the next one waits in its pipe, so a
#: worker never idles for a round trip.
DEPTH = 2
#: A chunk that ran longer than this is long: workers then get one chunk at a time, so
#: whichever worker finishes first takes the next (a worker slowed by other processes
#: does not hold a chunk that an idle worker could run), as a shared queue would.
LONG_CHUNK_SECONDS = 0.05
_BAD_SIGNALS = {
    signal.SIGKILL: "killed (SIGKILL): out of memory (the OOM killer), or kill -9",
    signal.SIGSEGV: "segmentation fault (SIGSEGV): a crash in native code",
    signal.SIGABRT: "aborted (SIGABRT)",
    signal.SIGBUS: "bus error (SIGBUS)",
    signal.SIGTERM: "terminated (SIGTERM)",
}


def describe_exit(exitcode: int | None) -> str:
    """``"segmentation fault (SIGSEGV): ..."`` or ``"exit code 3"`` for a dead worker's ``exitcode``."""
    if exitcode is None:
        return "an unknown cause"
    if exitcode < 0:
        try:
            sig = signal.Signals(-exitcode)
        except ValueError:
            return f"signal {-exitcode}"
        return f"signal {-exitcode}, " + _BAD_SIGNALS.get(sig, sig.name)
    return f"exit code {exitcode}"


# ---- the worker process ------------------------------------------------------------------------


def _worker_main(conn: multiprocessing.connection.Connection, current: Any) -> None:
    """Run chunks of calls until the pipe closes; ``current.value`` is the index of the running call."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from clustrix.remote.runner import INSIDE_ENV, dumps, encode_outcome_error, unwrap

    os.environ[INSIDE_ENV] = "local"  # a decorated function called by a call runs inline: no pool in a worker

    parent = os.getppid()
    while True:
        try:
            # A caller killed outright (SIGKILL, SIGTERM) runs no clean-up, and its pipe may
            # stay open in a process it forked: the worker also leaves when it is orphaned.
            while not conn.poll(PARENT_CHECK_SECONDS):
                if os.getppid() != parent:
                    return
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            func, arguments, positional = pickle.loads(payload)
            func = unwrap(func)
        except BaseException as exc:  # noqa: BLE001 - every call of the chunk reports it
            n = _count_calls(payload)
            error = encode_outcome_error(
                RuntimeError(f"the call could not be loaded in the worker: {type(exc).__name__}: {exc}")
            )
            conn.send_bytes(pickle.dumps((True, 0, [None] * n, dict.fromkeys(range(n), error))))
            continue
        values: list[Any] = []
        errors: dict[int, bytes] = {}
        start = 0
        last = time.monotonic()
        for index, call in enumerate(arguments):
            current.value = index
            try:
                values.append(func(*call) if positional else func(*call[0], **call[1]))
            except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too: the call's error
                values.append(None)
                errors[len(values) - 1] = encode_outcome_error(exc)
            now = time.monotonic()
            if now - last >= FLUSH_SECONDS and index + 1 < len(arguments):
                conn.send_bytes(_encode_results(dumps, encode_outcome_error, False, start, values, errors))
                start, values, errors, last = index + 1, [], {}, now
        current.value = -1  # between chunks: a crash now is blamed on the next chunk's first call
        conn.send_bytes(_encode_results(dumps, encode_outcome_error, True, start, values, errors))


def _count_calls(payload: bytes) -> int:
    """How many calls a payload that could not be loaded holds (its header is written separately)."""
    return int.from_bytes(payload[-4:], "big") if payload[-6:-4] == b"CX" else 1


def _encode_results(
    dumps: Callable[[Any], bytes],
    encode_error: Callable[[BaseException], bytes],
    final: bool,
    start: int,
    values: list[Any],
    errors: dict[int, bytes],
) -> bytes:
    """One message of results; a value that cannot be pickled becomes that call's ``TypeError``."""
    try:
        return dumps((final, start, values, errors))
    except Exception:  # noqa: BLE001 - find the values that cannot travel and report them per call
        for index, value in enumerate(values):
            if index in errors:
                continue
            try:
                dumps(value)
            except Exception as exc:  # noqa: BLE001
                values[index] = None
                message = f"the function's return value could not be pickled: {type(exc).__name__}: {exc}"
                errors[index] = encode_error(TypeError(message))
        return dumps((final, start, values, errors))


# ---- the parent side ---------------------------------------------------------------------------


class PoolJob:
    """The calls of one job in the pool: results land in ``results`` (by call index) as they come.

    ``results[i]`` is ``(True, value)``, ``(False, encoded_error_bytes)``, or
    ``(None, description)`` for a call that killed its worker. ``on_done`` runs once, in
    the pool's thread, when every call has a result or the job was cancelled.
    """

    def __init__(self, size: int, on_done: Callable[[], None]) -> None:
        self.results: list[tuple[bool | None, Any] | None] = [None] * size
        self.remaining = size
        self.cancelled = False
        self.started = False
        self.done = threading.Event()
        self._on_done = on_done

    def _set(self, index: int, result: tuple[bool | None, Any]) -> None:
        if self.results[index] is None:
            self.results[index] = result
            self.remaining -= 1

    def _finish(self) -> None:
        if not self.done.is_set():
            self.done.set()
            self._on_done()


class _Task:
    """A chunk of a job's calls: ``positions[k]`` is the job's call index of the chunk's call ``k``."""

    def __init__(
        self, job: PoolJob, positions: list[int], func: Any, calls: list[Any], payload: bytes, positional: bool
    ) -> None:
        self.job = job
        self.positions = positions
        self.func = func
        self.calls = calls
        self.positional = positional
        self.payload = payload
        self.received = 0  # calls of this chunk whose results arrived
        self.began = 0.0  # when its worker started it (monotonic; 0 until then)


def _pick(arguments: Sequence[Any], picked: Sequence[int]) -> tuple[list[Any], bool]:
    """The calls ``picked`` of a job's ``arguments``, and whether they are bare positional tuples.

    A map's arguments (:class:`clustrix.plugin.types.MappedArguments`) are sliced as positional
    tuples, without building an ``(args, kwargs)`` pair per call.
    """
    from clustrix.plugin.types import MappedArguments  # not at import: worker processes import this module too

    if isinstance(arguments, MappedArguments):
        items = arguments.items
        if picked and picked[-1] - picked[0] == len(picked) - 1:  # plan_tasks' chunks are contiguous
            return items[picked[0] : picked[-1] + 1], True
        return [items[i] for i in picked], True
    return [arguments[i] for i in picked], False


def _make_task(job: PoolJob, positions: list[int], func: Any, calls: list[Any], positional: bool) -> _Task:
    """A chunk of ``job`` running ``func`` on ``calls``, pickled once for its worker.

    The payload ends with ``CX`` and the number of calls, so a worker that cannot load it
    still knows how many errors to report.
    """
    from clustrix.remote.runner import dumps

    payload = dumps((func, calls, positional)) + b"CX" + len(calls).to_bytes(4, "big")
    return _Task(job, positions, func, calls, payload, positional)


class _Worker:
    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.current = ctx.RawValue("l", -1)
        self.process = ctx.Process(target=_worker_main, args=(child, self.current), daemon=True, name="clustrix-worker")
        with _main_module_hidden():
            self.process.start()
        child.close()
        #: chunks sent to this worker, in the order it runs them; the first is the one running
        self.tasks: collections.deque[_Task] = collections.deque()
        self.dead = False
        #: killed because a job it had a chunk of was cancelled: no call of it crashed
        self.cancelled = False

    def has(self, job: PoolJob) -> bool:
        return any(task.job is job for task in self.tasks)


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start worker processes without re-running the user's script in them.

    Spawned workers normally re-import ``__main__`` (as ``__mp_main__``, by its path, or
    by its module name under ``python -m``), which re-runs a script's top-level code:
    without an ``if __name__ == "__main__":`` guard that code submits again. Calls travel
    with cloudpickle, which carries functions and classes of ``__main__`` by value, so
    the workers do not need the script: hide its path and module spec while processes start.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    with _hide_lock:
        saved: dict[str, Any] = {
            name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__
        }
        main.__dict__.pop("__file__", None)
        if "__spec__" in saved:
            main.__spec__ = None
        try:
            yield
        finally:
            main.__dict__.update(saved)


_hide_lock = threading.Lock()


def _context() -> Any:
    """Fresh interpreters on every platform: see the module's docstring for why not fork or forkserver."""
    return multiprocessing.get_context("spawn")


class ProcessPool:
    """``workers`` reusable processes fed from one queue by one dispatcher thread."""

    def __init__(self, workers: int) -> None:
        self.max_workers = workers
        self._ctx = _context()
        self._lock = threading.Lock()
        self._queue: collections.deque[_Task] = collections.deque()
        self._workers: list[_Worker] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._thread: threading.Thread | None = None
        self._closed = False
        #: chunks in flight per worker: DEPTH while the last chunk that finished was short, else 1
        self._depth = 1

    # ---- called by the local scheduler ----
    def submit(self, job: PoolJob, func: Any, chunks: Sequence[Sequence[int]], arguments: Sequence[Any]) -> None:
        """Queue ``chunks`` of ``job``'s calls; pickling errors raise here, before anything is queued."""
        tasks = [_make_task(job, list(chunk), func, *_pick(arguments, chunk)) for chunk in chunks]
        with self._lock:
            if self._closed:
                raise RuntimeError("the local process pool is shut down (the interpreter is exiting)")
            self._queue.extend(tasks)
            try:
                # workers start here, in the caller's thread, while it hides __main__'s path for them;
                # only a replacement for a crashed worker starts in the dispatcher thread
                idle = sum(1 for w in self._workers if not w.tasks and not w.dead)
                wanted = min(len(self._queue) - idle, self.max_workers - len(self._workers))
                for _ in range(max(0, wanted)):
                    self._workers.append(_Worker(self._ctx))
                if self._thread is None:
                    thread = threading.Thread(target=self._run, name="clustrix-local-pool", daemon=True)
                    thread.start()  # Python 3.12+ refuses a new thread while the interpreter exits
                    self._thread = thread
            except BaseException:
                self._queue = collections.deque(t for t in self._queue if t not in tasks)  # nothing left to wait on
                raise
        self._wake()

    def cancel(self, job: PoolJob) -> None:
        """Drop ``job``'s queued chunks and kill the workers running its calls."""
        with self._lock:
            job.cancelled = True
            self._queue = collections.deque(t for t in self._queue if t.job is not job)
            for worker in self._workers:
                if worker.has(job) and not worker.dead:
                    # the other jobs' chunks it holds are queued again when it is buried
                    worker.cancelled = True
                    with contextlib.suppress(OSError):
                        worker.process.kill()
        job._finish()
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    def running(self, job: PoolJob) -> int:
        """How many of ``job``'s calls are running now (one per worker busy with it)."""
        with self._lock:
            return sum(1 for w in self._workers if w.tasks and w.tasks[0].job is job and not w.dead)

    def busy(self) -> bool:
        with self._lock:
            return bool(self._queue) or any(w.tasks for w in self._workers)

    def shutdown(self, *, wait: bool) -> None:
        """Stop every worker; with ``wait``, first let queued and running calls finish (Ctrl-C stops waiting)."""
        try:
            while wait and self.busy() and self._thread is not None and self._thread.is_alive():
                time.sleep(0.01)  # (a dispatcher that is gone finishes nothing: waiting would never end)
        finally:
            with self._lock:
                self._closed = True
                self._queue.clear()
                workers, self._workers = self._workers, []
            for worker in workers:
                with contextlib.suppress(OSError):
                    worker.conn.close()  # an idle worker exits on EOF
                if worker.tasks:
                    with contextlib.suppress(OSError):
                        worker.process.kill()
            deadline = time.monotonic() + 1.0
            for worker in workers:
                worker.process.join(max(0.0, deadline - time.monotonic()))
                if worker.process.is_alive():
                    worker.process.kill()
                    worker.process.join(1.0)
            self._wake()

    # ---- the dispatcher thread ----
    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        try:
            self._dispatch()
        except BaseException as exc:  # a bug here must not leave callers waiting for ever
            if self._closed:  # shut down under its feet (the interpreter is exiting): nothing waits any more
                return
            from clustrix.remote.runner import encode_outcome_error

            error = encode_outcome_error(RuntimeError(f"the local process pool failed: {type(exc).__name__}: {exc}"))
            with self._lock:
                self._closed = True
                tasks = list(self._queue) + [task for w in self._workers for task in w.tasks]
                self._queue.clear()
                for worker in self._workers:
                    with contextlib.suppress(OSError):
                        worker.process.kill()
            for task in tasks:
                for position in task.positions:
                    task.job._set(position, (False, error))
                task.job._finish()
            raise

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                self._assign()
                waitables: list[Any] = [self._wake_r]
                for worker in self._workers:
                    waitables += [worker.conn, worker.process.sentinel]
            ready = multiprocessing.connection.wait(waitables)
            if self._wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            with self._lock:
                for worker in list(self._workers):
                    if worker.dead:
                        continue
                    # a closed pipe or an ended process: either way the worker is gone
                    gone = worker.conn in ready and not self._receive(worker)
                    if gone or worker.process.sentinel in ready:
                        self._bury(worker)

    def _assign(self) -> None:
        """Give queued chunks to the least busy workers, up to ``_depth`` each (starting workers up to the maximum)."""
        while self._queue:
            live = [w for w in self._workers if not w.dead]
            worker = min(live, key=lambda w: len(w.tasks), default=None)
            if worker is None or (worker.tasks and len(self._workers) < self.max_workers):
                worker = _Worker(self._ctx)  # only a crashed worker's replacement starts here
                self._workers.append(worker)
            elif len(worker.tasks) >= self._depth:
                return
            task = self._queue.popleft()
            worker.tasks.append(task)
            if len(worker.tasks) == 1:
                task.began = time.monotonic()
            task.job.started = True
            try:
                worker.conn.send_bytes(task.payload)
            except OSError:
                self._bury(worker)

    def _receive(self, worker: _Worker) -> bool:
        """Take one message from ``worker``; False when its pipe is closed (it died)."""
        try:
            message = worker.conn.recv_bytes()
        except (EOFError, OSError):
            return False
        if not worker.tasks:
            return True
        task = worker.tasks[0]
        try:
            final, start, values, errors = pickle.loads(message)
        except Exception as exc:  # noqa: BLE001 - e.g. a returned value whose class cannot be loaded here
            from clustrix.remote.runner import encode_outcome_error

            # the message's position is unknown: the worker goes, and its unfinished calls with it
            error = encode_outcome_error(RuntimeError(f"the results could not be unpickled here: {exc!r}"))
            for position in task.positions[task.received :]:
                task.job._set(position, (False, error))
            worker.tasks.popleft()
            worker.cancelled = True  # no crash to blame: its other chunks are queued again
            with contextlib.suppress(OSError):
                worker.process.kill()
            self._settle(task.job)
            return True
        for offset, value in enumerate(values):
            position = task.positions[start + offset]
            if offset in errors:
                task.job._set(position, (False, errors[offset]))
            else:
                task.job._set(position, (True, value))
        task.received = start + len(values)
        if final:
            now = time.monotonic()
            self._depth = DEPTH if now - task.began < LONG_CHUNK_SECONDS else 1
            worker.tasks.popleft()
            if worker.tasks:
                worker.tasks[0].began = now
            self._settle(task.job)
        return True

    def _bury(self, worker: _Worker) -> None:
        """A worker died: drain what it sent, fail the call it was in, queue its other calls again, forget it."""
        while worker.tasks:
            try:
                if not worker.conn.poll() or not self._receive(worker):
                    break
            except (EOFError, OSError):
                break
        worker.dead = True
        self._workers.remove(worker)
        worker.process.join(1.0)
        with contextlib.suppress(OSError):
            worker.conn.close()
        tasks = [task for task in worker.tasks if not task.job.cancelled]
        running = worker.tasks[0] if worker.tasks else None
        worker.tasks.clear()
        again = []
        for task in tasks:
            skip = -1
            if task is running and not worker.cancelled:  # the call it was in killed it
                skip = max(worker.current.value, task.received)
                task.job._set(task.positions[skip], (None, describe_exit(worker.process.exitcode)))
            rest = [k for k in range(task.received, len(task.positions)) if k != skip]
            if rest:
                again.append(self._subtask(task, rest))
            self._settle(task.job)
        self._queue.extendleft(reversed(again))

    @staticmethod
    def _subtask(task: _Task, calls: list[int]) -> _Task:
        """The calls ``calls`` (indices into ``task``) of ``task`` as a chunk of their own."""
        picked = [task.calls[k] for k in calls]
        return _make_task(task.job, [task.positions[k] for k in calls], task.func, picked, task.positional)

    def _settle(self, job: PoolJob) -> None:
        if job.remaining == 0:
            job._finish()
