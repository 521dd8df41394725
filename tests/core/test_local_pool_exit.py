"""The local process pool at interpreter exit, when Python (3.12+) refuses to start a new thread."""

from __future__ import annotations

import threading

import pytest

from clustrix.local.pool import PoolJob, ProcessPool


def square(x: int) -> int:
    return x * x


def test_a_submit_the_exiting_interpreter_refuses_leaves_nothing_for_the_exit_to_wait_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = ProcessPool(1)

    def refused(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")  # Python 3.12's words

    monkeypatch.setattr(threading.Thread, "start", refused)
    with pytest.raises(RuntimeError, match="interpreter shutdown"):
        pool.submit(PoolJob(1, lambda: None), square, [[0]], [((3,), {})])
    monkeypatch.undo()
    assert not pool._queue  # the refused calls are not left queued with no dispatcher to run them
    finished = threading.Event()
    waiter = threading.Thread(target=lambda: (pool.shutdown(wait=True), finished.set()), daemon=True)
    waiter.start()
    assert finished.wait(60), "shutdown(wait=True) waited for calls nobody could run"
