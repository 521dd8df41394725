"""The live progress bar of a ``.map()``: calls done, failed, running and pending.

It uses ``tqdm.auto``, which draws a text bar in a terminal and a widget in Jupyter
with the same code (and falls back to text where ipywidgets is missing), and costs one
small pure-Python dependency; rich would bring its own console, markdown and pygments
stack for the same bar.

The bar is on by default where someone watches: stdout is a terminal, or the code runs
in a Jupyter kernel. ``progress=False`` (on the call, ``@cluster(progress=False)``,
``configure(progress=False)`` or ``CLUSTRIX_PROGRESS=0``) turns it off; ``True`` forces it.
It appears only once a map has taken longer than ``DELAY`` seconds, so quick maps stay
quiet and pay nothing.
"""

from __future__ import annotations

import concurrent.futures
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clustrix.api.futures import ClusterFuture
    from clustrix.config.settings import ClusterConfig

#: Seconds a map runs before its bar appears.
DELAY = 0.5
_TICK = 0.2


def _bar(total: int, name: str, *, delay: float = 0.0) -> Any:
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    return tqdm(total=total, desc=name, unit="call", dynamic_ncols=True, delay=delay)


def in_notebook() -> bool:
    """True inside a Jupyter (ZMQ) kernel."""
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except Exception:  # noqa: BLE001 - any odd IPython state means "not a notebook"
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def wanted(progress: bool | None, config: ClusterConfig) -> bool:
    """Whether to show a bar: the call's ``progress``, else the configured one, else "someone is watching"."""
    if progress is not None:
        return bool(progress)
    configured = config.get("progress")
    if configured is not None:
        return bool(configured)
    stdout = sys.stdout
    return in_notebook() or bool(stdout is not None and hasattr(stdout, "isatty") and stdout.isatty())


def describe(counts: Mapping[str, int] | None, state: str | None) -> str:
    """``"3 failed, 2 running, 10 pending"`` (zero counts left out), or the job's state without counts."""
    if counts is None:
        return state.lower() if state else ""
    parts = [f"{counts[key]} {key}" for key in ("failed", "running", "pending") if counts.get(key)]
    return ", ".join(parts)


def wait(future: ClusterFuture, total: int, name: str, timeout: float | None) -> Any:
    """``future.result(timeout)``, drawing a bar of the job's calls while it runs."""
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    bar = None
    try:
        while True:
            step = _TICK if deadline is None else max(0.0, min(_TICK, deadline - time.monotonic()))
            try:
                return future.result(step)
            except concurrent.futures.TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
            if bar is None and time.monotonic() - start >= DELAY:
                bar = _bar(total, name)
            if bar is not None:
                _update(bar, future)
    finally:
        if bar is not None:
            _update(bar, future)
            bar.close()


def count(futures: Sequence[concurrent.futures.Future[Any]], name: str) -> None:
    """A bar of ``futures`` (``Executor.map``), shown after ``DELAY`` seconds.

    It counts the futures as they finish and, while they run, follows their job's call
    counts as the poller last saw them (``ClusterFuture.last_status``): a remote array's
    futures all resolve at its end, but its calls are counted while it runs.
    """
    bar = _bar(len(futures), name, delay=DELAY)
    lock = threading.Lock()
    tally = {"finished": 0, "failed": 0}
    first = futures[0] if futures else None

    def draw(*, force: bool) -> None:  # with the lock held
        status = getattr(first, "last_status", None)
        counts = status.counts if status is not None else None
        finished = tally["finished"]
        if counts is not None and tally["finished"] < bar.total <= sum(counts.values()):
            finished = max(finished, counts.get("done", 0) + counts.get("failed", 0))
            text = describe(counts, None)
        else:
            text = f"{tally['failed']} failed" if tally["failed"] else ""
        bar.set_postfix_str(text, refresh=False)
        if finished > bar.n:
            bar.update(finished - bar.n)
        elif force:
            bar.refresh()

    def finished(future: concurrent.futures.Future[Any]) -> None:
        with lock:
            tally["finished"] += 1
            if future.cancelled() or future.exception() is not None:
                tally["failed"] += 1
            draw(force=False)
            if tally["finished"] >= bar.total:
                bar.close()

    def follow() -> None:
        time.sleep(DELAY)
        while True:
            with lock:
                if tally["finished"] >= bar.total:
                    return
                draw(force=True)
            time.sleep(_TICK)

    for future in futures:
        future.add_done_callback(finished)
    if futures:
        threading.Thread(target=follow, name="clustrix-progress", daemon=True).start()


def _update(bar: Any, future: ClusterFuture) -> None:
    status = future.last_status
    counts = status.counts if status is not None else None
    if counts is not None:
        bar.n = counts.get("done", 0) + counts.get("failed", 0)
    elif future.done() and not future.cancelled() and future.exception() is None:
        bar.n = bar.total
    bar.set_postfix_str(describe(counts, status.state.value if status is not None else None), refresh=False)
    bar.refresh()
