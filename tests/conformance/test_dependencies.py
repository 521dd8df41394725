"""Futures as arguments on every batch scheduler (issue 21): the scheduler holds the dependant, the value
travels on the cluster, a failed or cancelled input ends its dependants, and the pipeline runs without
the process that submitted it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from clustrix import Job, cluster
from clustrix.errors import DependencyError
from tests.conformance.target import Target


def _held(future: object) -> list[dict[str, object]]:
    """The dependencies a submitted job records (its handle, so the registry), proving it was held, not chained."""
    handle = getattr(future, "handle", None)
    assert handle is not None, f"{future!r} was chained in the client, not held by the scheduler"
    return list(handle.data.get("after") or [])


def test_a_three_stage_pipeline_is_submitted_at_once_and_returns_the_final_value(target: Target) -> None:
    @cluster(**target.options)
    def slow_square(x: int) -> int:
        time.sleep(2)
        return x * x

    @cluster(**target.options)
    def plus_one(x: int) -> int:
        return x + 1

    @cluster(**target.options)
    def total(values: list[int], offset: dict[str, int]) -> int:
        return sum(values) + offset["by"]

    started = time.monotonic()
    first = slow_square.submit_map(range(4))
    second = plus_one.submit_map(first)  # call i takes the result of future i
    third = total.submit(second, {"by": first[0]})  # futures inside a list and a dict
    submitted = time.monotonic() - started
    assert not first[0].done(), "submit waited for the first stage"
    assert [entry["job"] for entry in _held(second[0])] == [first[0].job_id]
    assert {entry["job"] for entry in _held(third)} == {first[0].job_id, second[0].job_id}
    assert third.result(timeout=600) == sum(x * x + 1 for x in range(4)) + 0
    assert [f.result() for f in second] == [x * x + 1 for x in range(4)]
    assert submitted < 60


def test_an_element_wise_map_over_a_map_gets_each_result_in_order(target: Target) -> None:
    @cluster(**target.options)
    def square(x: int) -> int:
        return x * x

    @cluster(**target.options)
    def negate(x: int) -> int:
        return -x

    squares = square.submit_map(range(20))
    assert negate.map(squares) == [-(x * x) for x in range(20)]


def test_a_failed_input_raises_dependencyerror_naming_it_with_its_exception_as_cause(target: Target) -> None:
    @cluster(**target.options)
    def check(x: int) -> int:
        if x == 2:
            raise ValueError(f"bad input {x}")
        return x

    @cluster(**target.options)
    def double(x: int) -> int:
        return 2 * x

    checked = check.submit_map(range(4))
    doubled = double.submit_map(checked)
    _held(doubled[0])
    with pytest.raises(DependencyError) as info:
        doubled[2].result(timeout=300)
    assert info.value.upstream_job_id == checked[0].job_id
    assert info.value.upstream_call == 2
    assert isinstance(info.value.__cause__, ValueError) and "bad input 2" in str(info.value.__cause__)
    if target.inputs_one_by_one:  # the others' inputs were fine, whichever task ran the failed call
        assert [doubled[i].result(timeout=300) for i in (0, 1, 3)] == [0, 2, 6]
    # and one further stage down: the dependant of a dependant fails too, naming its own input
    final = double.submit(doubled[2])
    with pytest.raises(DependencyError):
        final.result(timeout=300)


def test_cancelling_an_upstream_cancels_its_dependants(target: Target) -> None:
    @cluster(**target.options)
    def nap(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @cluster(**target.options)
    def after(x: float) -> float:
        return x

    upstream = nap.submit(300)
    dependant = after.submit(upstream)
    try:
        _held(dependant)
        time.sleep(2)
        assert upstream.cancel()
        with pytest.raises(DependencyError) as info:
            dependant.result(timeout=180)
        assert info.value.upstream_job_id == upstream.job_id
        assert Job.attach(dependant.job_id).status().state.final
    finally:  # nothing of a failed test keeps the shared testbed busy
        for future in (upstream, dependant):
            future.cancel()


def test_the_cli_cancels_a_job_with_its_dependants(target: Target) -> None:
    @cluster(**target.options)
    def nap(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    upstream = nap.submit(300)
    middle = nap.submit(upstream)
    last = nap.submit(middle)
    try:
        check_the_cli(upstream, middle, last)
    finally:  # nothing of a failed test keeps the shared testbed busy
        for future in (upstream, middle, last):
            future.cancel()


def check_the_cli(upstream: Any, middle: Any, last: Any) -> None:
    listing = subprocess.run(
        [sys.executable, "-m", "clustrix.cli", "status", last.job_id], capture_output=True, text=True, timeout=120
    )
    assert f"waiting for {middle.job_id}" in listing.stdout, listing.stdout + listing.stderr
    jobs = subprocess.run(
        [sys.executable, "-m", "clustrix.cli", "jobs", "--json"], capture_output=True, text=True, timeout=120
    )
    after = {job["job_id"]: job["after"] for job in json.loads(jobs.stdout)}
    assert after[last.job_id] == [middle.job_id] and after[middle.job_id] == [upstream.job_id]
    done = subprocess.run(
        [sys.executable, "-m", "clustrix.cli", "cancel", "--with-dependants", upstream.job_id],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert middle.job_id in done.stdout and last.job_id in done.stdout
    for future in (upstream, middle, last):
        future.exception(timeout=180)  # every one ends (cancelled, or failed for its cancelled input)
        assert Job.attach(future.job_id).status().state.final


def test_the_pipeline_finishes_after_the_submitting_process_was_killed(target: Target) -> None:
    script = textwrap.dedent(
        f"""
        import os, time
        from clustrix import cluster

        @cluster(**{target.options!r})
        def slow_square(x):
            time.sleep(3)
            return x * x

        @cluster(**{target.options!r})
        def plus_one(x):
            return x + 1

        @cluster(**{target.options!r})
        def total(values):
            return sum(values)

        first = slow_square.submit_map(range(3))
        second = plus_one.submit_map(first)
        third = total.submit(second)
        print(third.job_id, flush=True)
        time.sleep(600)  # killed here, long before the first stage ends
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    last = process.stdout.readline().strip()
    process.kill()
    process.wait(timeout=30)
    assert last, "the submitting process printed no job id"
    check = subprocess.run(
        [sys.executable, "-c", f"from clustrix import Job; print(Job.attach({last!r}).result(timeout=600))"],
        capture_output=True,
        text=True,
        timeout=700,
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip().splitlines()[-1] == str(sum(x * x + 1 for x in range(3)))


def test_a_dependant_submitted_while_its_upstream_directory_goes_takes_the_values(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race of an upstream finishing in the poll round of its dependant's submit (cleanup_on_success)."""
    import threading

    from clustrix.remote import jobdir

    options = {**target.options, "cleanup_on_success": True}

    @cluster(**options)
    def square(x: int) -> int:
        return x * x

    @cluster(**options)
    def negate(x: int) -> int:
        return -x

    squares = square.submit_map(range(4))
    dependants: list[Any] = []
    remove = jobdir.remove_job_dir

    def racing(transport: Any, handle: Any) -> bool:
        # the poller gave the upstream's directory up; right now the user submits a dependant of it
        if handle.job_id == squares[0].job_id and not dependants:
            thread = threading.Thread(target=lambda: dependants.append(negate.submit_map(squares)))
            thread.start()
            thread.join(timeout=5)  # (with the fix the submit waits for the values, so not for long)
        return remove(transport, handle)

    monkeypatch.setattr(jobdir, "remove_job_dir", racing)
    assert [f.result(timeout=300) for f in squares] == [x * x for x in range(4)]
    deadline = time.monotonic() + 120
    while not dependants and time.monotonic() < deadline:
        time.sleep(0.1)
    assert dependants, "the dependant's submit did not return"
    assert [f.result(timeout=300) for f in dependants[0]] == [-(x * x) for x in range(4)]
    assert not _held(dependants[0][0]), "held on an upstream whose directory was being removed"
