"""Decorated functions calling decorated functions, and ``@cluster`` on methods (local executor, subprocess jobs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from clustrix import cluster
from clustrix.plugin.dryrun import DryRun
from tests.core.counters import Counter

# ---- a decorated function called inside a call runs inline there ----------------------------------


@cluster(executor="process")
def add_one(x: int) -> tuple[int, int]:
    return x + 1, os.getpid()


@cluster(executor="process", max_workers=2)
def calls_add_one(x: int) -> dict[str, Any]:
    value, pid = add_one(x)
    mapped = add_one.map([x, x + 1])
    future = add_one.submit(x)
    return {
        "here": os.getpid(),
        "call": (value, pid),
        "map": mapped,
        "submit": future.result(),
        "job_id": future.job_id,
    }


def test_a_decorated_function_called_in_a_process_worker_runs_inline_in_that_worker() -> None:
    # today: AssertionError: daemonic processes are not allowed to have children
    results = calls_add_one.map(range(3))
    for x, result in enumerate(results):
        here = result["here"]
        assert here != os.getpid()
        assert result["call"] == (x + 1, here)
        assert result["map"] == [(x + 1, here), (x + 2, here)]
        assert result["submit"] == (x + 1, here) and result["job_id"] is None  # no job: it ran inline


def test_a_decorated_function_called_in_a_thread_worker_runs_inline_without_deadlock() -> None:
    @cluster(executor="thread", max_workers=2)
    def inner(x: int) -> tuple[int, int]:
        return x * 2, threading.get_ident()

    @cluster(executor="thread", max_workers=2)
    def outer(x: int) -> tuple[int, tuple[int, int], list[tuple[int, int]]]:
        return threading.get_ident(), inner(x), inner.map([x])

    # more outer calls than threads: had the inner calls queued behind them, every thread would wait for ever
    futures = outer.submit_map(range(6))
    for x, future in enumerate(futures):
        thread, call, mapped = future.result(timeout=60)
        assert call == (2 * x, thread) and mapped == [(2 * x, thread)]


def test_an_inline_call_raises_its_own_exception_in_the_calling_function() -> None:
    @cluster(executor="process")
    def refuse(x: int) -> int:
        raise ValueError(f"no {x}")

    @cluster(executor="process")
    def outer(x: int) -> str:
        try:
            refuse.map([x, x + 1])
        except ValueError as exc:
            first = str(exc)
        failed = refuse.submit(x)
        return f"{first}; {failed.exception()}"

    assert outer(3) == "no 3; no 3"


def test_nested_calls_submit_configured_submits_the_inner_call_as_a_job_of_its_own(tmp_path: Path) -> None:
    @cluster(cluster_type="subprocess", remote_work_dir=str(tmp_path / "work"), nested_calls="submit")
    def remote(x: int) -> int:
        return x + 100

    @cluster(executor="thread")
    def outer(x: int) -> tuple[int, str | None]:
        future = remote.submit(x)
        return future.result(timeout=120), future.job_id

    value, job_id = outer(1)
    assert value == 101 and job_id is not None
    assert [p.name for p in (tmp_path / "work").iterdir()] == [job_id]


def test_in_a_job_a_decorated_function_runs_inside_the_job_and_submits_no_other(tmp_path: Path) -> None:
    work = tmp_path / "work"

    @cluster(cluster_type="subprocess", remote_work_dir=str(work))
    def inner(x: int) -> tuple[int, int, str | None]:
        return x * 3, os.getpid(), os.environ.get("CLUSTRIX_INSIDE_CALL")

    @cluster(cluster_type="subprocess", remote_work_dir=str(work))
    def outer(x: int) -> tuple[int, tuple[int, int, str | None], str | None]:
        future = inner.submit(x)
        assert future.result() == inner(x)
        return os.getpid(), future.result(), future.job_id

    future = outer.submit(2)
    job_pid, (value, inner_pid, where), inner_job = future.result(timeout=120)
    assert value == 6 and inner_pid == job_pid != os.getpid() and where == "job"
    assert inner_job is None
    assert [p.name for p in work.iterdir()] == [future.job_id]  # one job: the inner call submitted none


# ---- @cluster on methods ---------------------------------------------------------------------------

#: The user's module of ``tests/core/counters.py``: a class with decorated methods, run as a script.
COUNTER_MODULE = (Path(__file__).parent / "counters.py").read_text()


def test_a_decorated_method_of_a_module_class_binds_self_and_self_travels_by_value() -> None:
    counter = Counter(10)
    value, calls, pid = counter.add(1)
    assert (value, calls) == (11, 1) and pid != os.getpid()
    assert counter.add.submit(2, y=3).result(timeout=120)[:2] == (15, 1)
    assert [r[:2] for r in counter.add.map([1, 2, 3])] == [(11, 1), (12, 1), (13, 1)]
    assert counter.calls == 0  # each call got its own copy of self
    assert Counter.add(counter, 5)[0] == 15  # through the class, self given explicitly
    assert counter.add.__name__ == "add" and "Counter.add" in repr(counter.add)
    shown = counter.add.job_script(1)
    assert isinstance(shown, DryRun) and shown.calls == 1
    assert "thread worker" in str(counter.wait.job_script(1))  # the method's own source picks the executor


def test_a_decorated_method_of_a_class_in_a_script_run_as_a_program(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        COUNTER_MODULE
        + textwrap.dedent(
            """
            import json

            if __name__ == "__main__":
                counter = Counter(10)
                print(json.dumps({
                    "call": counter.add(1)[:2],
                    "submit": counter.add.submit(2).result()[:2],
                    "map": [r[:2] for r in counter.add.map([1, 2])],
                    "pids": sorted({r[2] for r in counter.add.map(range(4))} - {os.getpid()}) != [],
                    "calls": counter.calls,
                }))
            """
        )
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result == {"call": [11, 1], "submit": [12, 1], "map": [[11, 1], [12, 1]], "pids": True, "calls": 0}


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_a_decorated_method_calling_another_decorated_method_of_self_runs_it_inline(executor: str) -> None:
    class Pipeline:
        def __init__(self, factor: int) -> None:
            self.factor = factor

        @cluster(executor=executor)
        def scale(self, x: int) -> int:
            return x * self.factor

        @cluster(executor=executor)
        def total(self, items: list[int]) -> int:
            return sum(self.scale.map(items))

    assert Pipeline(3).total([1, 2, 3]) == 18
