"""``retries=N`` and ``clustrix retry`` against every batch scheduler and transport (issue 21).

Each call counts its own runs in a file of the job's directory (its working directory, shared
by every task and by a resubmission of the job), so a test sees how often each call ran.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from clustrix import Job, JobError, cluster
from tests.conformance.target import Target
from tests.conformance.test_conformance import submit_in_a_process_that_exits

N_CALLS = 50
FLAKY = 7

FLAKY_SOURCE = """
def flaky(x, how):
    import os, signal
    runs = f"runs-{x}"
    with open(runs, "a") as fh:
        fh.write(".")
    n = os.path.getsize(runs)
    if x == 7 and n == 1:
        if how == "raise":
            raise ValueError("call 7 failed on its first attempt")
        os.kill(os.getpid(), signal.SIGKILL)  # the task dies: no outcome, no exit code (a node failure)
    return x, n
"""


def flaky(x: int, how: str) -> tuple[int, int]:
    """Call 7 raises (``how="raise"``) or kills its task (``"kill"``) on its first run; each returns (x, runs)."""
    runs = f"runs-{x}"
    with open(runs, "a") as fh:
        fh.write(".")
    n = os.path.getsize(runs)
    if x == FLAKY and n == 1:
        if how == "raise":
            raise ValueError(f"call {x} failed on its first attempt")
        os.kill(os.getpid(), signal.SIGKILL)  # the task dies: no outcome, no exit code (a node failure)
    return x, n


def expected() -> list[tuple[int, int]]:
    """Every call once, call 7 twice: only the flaky call ran again."""
    return [(x, 2 if x == FLAKY else 1) for x in range(N_CALLS)]


def test_a_call_that_raised_once_in_a_map_of_50_runs_again_with_retries(target: Target) -> None:
    retried = cluster(retries=1, **target.options)(flaky)
    assert [tuple(r) for r in retried.map(range(N_CALLS), ["raise"] * N_CALLS)] == expected()

    once = cluster(retries=0, **target.options)(flaky)
    futures = once.submit_map(range(N_CALLS), ["raise"] * N_CALLS)
    with pytest.raises(ValueError, match="call 7 failed on its first attempt"):
        futures[FLAKY].result(timeout=300)
    assert all(f.exception(timeout=300) is None for i, f in enumerate(futures) if i != FLAKY)


def test_a_lost_call_in_a_map_of_50_is_resubmitted_alone_with_retries(target: Target) -> None:
    futures = cluster(retries=1, **target.options)(flaky).submit_map(range(N_CALLS), ["kill"] * N_CALLS)
    first_native = futures[0].handle.native_id
    assert [tuple(f.result(timeout=600)) for f in futures] == expected()
    job = Job.attach(futures[0].job_id)  # one job, one id: the registry names the resubmitted native job
    assert job.handle.native_id == futures[0].handle.native_id != first_native
    assert [tuple(r) for r in job.results(timeout=60)] == expected()


def test_a_lost_call_fails_without_retries(target: Target) -> None:
    futures = cluster(**target.options)(flaky).submit_map(range(N_CALLS), ["kill"] * N_CALLS)
    assert isinstance(futures[FLAKY].exception(timeout=600), JobError)
    # nothing ran again; calls its killed task would have run after it (a scheduler that packs calls
    # into few tasks, tsp) are lost with it
    for x, future in enumerate(futures):
        assert isinstance(future.exception(), JobError) if future.exception() else future.result() == (x, 1)
    assert Job.attach(futures[0].job_id).handle.native_id == futures[0].handle.native_id


def test_clustrix_retry_runs_the_failed_calls_of_a_finished_map_again(target: Target) -> None:
    job_id = submit_in_a_process_that_exits(
        target, FLAKY_SOURCE, f"flaky.submit_map(range({N_CALLS}), ['raise'] * {N_CALLS})[0]"
    )
    job = Job.attach(job_id)
    with pytest.raises(ValueError, match="call 7 failed"):
        job.results(timeout=300)
    first_native = job.handle.native_id
    done = subprocess.run(
        [sys.executable, "-m", "clustrix.cli", "retry", job_id], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert f"{job_id}: call(s) 7 submitted again" in done.stdout
    again = Job.attach(job_id)
    assert again.handle.native_id != first_native
    assert [tuple(r) for r in again.results(timeout=300)] == expected()
    deadline = time.monotonic() + 60
    while again.status().counts != {"done": N_CALLS, "failed": 0, "running": 0, "pending": 0}:
        assert time.monotonic() < deadline, again.status()
        time.sleep(0.5)
    nothing = subprocess.run(
        [sys.executable, "-m", "clustrix.cli", "retry", job_id], capture_output=True, text=True, timeout=300
    )
    assert (nothing.returncode, nothing.stdout.strip()) == (0, f"{job_id}: no call failed; nothing submitted")
