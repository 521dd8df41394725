"""The same end-to-end behaviour from every batch scheduler, through every transport (see README.md).

Each test runs once per (scheduler, transport) target, through the public API (``@cluster``,
futures, :class:`clustrix.Job`, the ``clustrix`` CLI) against the real scheduler.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from clustrix import Job, JobError, JobOutOfMemoryError, JobTimeoutError, cluster
from clustrix.config.settings import resolve_config
from clustrix.errors import ClustrixError
from tests.conformance.target import Target, full_file_system
from tests.held_calls import arguments, finish_raise_or_wait, held, release


def wait_for_native(target: Target, native_id: str, word: str, timeout: float = 60) -> str:
    """The scheduler's own words about the job, once ``word`` is among them (or at the timeout)."""
    assert target.native_state is not None
    deadline = time.monotonic() + timeout
    while True:
        text = target.native_state(native_id)
        if word.lower() in text.lower() or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def clustrix_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clustrix.cli", *args], capture_output=True, text=True, timeout=300)


def submit_in_a_process_that_exits(target: Target, body: str, call: str) -> str:
    """Submit from a separate Python process that exits at once; return the clustrix job id."""
    script = textwrap.dedent(
        f"""
        import time
        from clustrix import cluster
        @cluster(**{target.options!r})
        {textwrap.indent(textwrap.dedent(body), "        ").strip()}
        print({call}.job_id)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_a_single_call_returns_its_value(target: Target) -> None:
    @cluster(cores=1, time="00:05:00", **target.options)
    def add(a: int, b: int) -> int:
        return a + b

    assert add(40, 2) == 42


def test_the_job_starts_in_its_private_job_directory(target: Target) -> None:
    """Not in the directory the scheduler chose (PBS: the home directory), which others might write (issue 18)."""

    @cluster(**target.options)
    def where() -> tuple[str, int]:
        return os.getcwd(), os.stat(".").st_mode & 0o777

    future = where.submit()
    cwd, mode = future.result(timeout=300)
    assert (os.path.basename(cwd), oct(mode)) == (future.job_id, oct(0o700))


def test_a_map_of_100_calls_is_one_job_and_returns_in_order(target: Target) -> None:
    @cluster(**target.options)
    def square(x: int) -> int:
        return x * x

    futures = square.submit_map(range(100))
    assert len({f.job_id for f in futures}) == 1
    assert [f.result(timeout=300) for f in futures] == [x * x for x in range(100)]


def test_the_original_exception_comes_back_with_the_remote_traceback(target: Target) -> None:
    @cluster(**target.options)
    def divide(a: float, b: float) -> float:
        if b == 0:
            raise ValueError("b must not be zero")
        return a / b

    with pytest.raises(ValueError, match="b must not be zero") as info:
        divide(1, 0)
    assert "divide" in str(info.value.__cause__)  # the remote traceback, chained


def test_a_time_limit_overrun_raises_jobtimeouterror(target: Target) -> None:
    @cluster(time=target.short_time, **target.options)
    def overrun() -> None:
        time.sleep(3600)

    with pytest.raises(JobTimeoutError):
        overrun.submit().result(timeout=300)


def test_a_memory_overrun_raises_joboutofmemoryerror(target: Target) -> None:
    if not target.enforces_memory:
        pytest.skip(f"{target.scheduler} does not enforce memory limits here")

    @cluster(memory="100M", **target.options)
    def hog() -> None:
        block = bytearray(400 * 2**20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(5)

    with pytest.raises(JobOutOfMemoryError):
        hog()


def test_cancelling_a_running_call_ends_it_cancelled(target: Target) -> None:
    @cluster(**target.options)
    def nap() -> None:
        time.sleep(600)

    future = nap.submit()
    assert future.handle is not None and future.handle.native_id
    wait_for_native(target, future.handle.native_id, "running")
    assert future.cancel()
    with pytest.raises(concurrent.futures.CancelledError):
        future.result(timeout=60)
    assert Job.attach(future.job_id).status().state.value == "CANCELLED"


def test_cancelling_a_queued_call_takes_it_out_of_the_queue(target: Target) -> None:
    if not target.can_queue and target.hold is None:
        pytest.skip(f"the {target.scheduler} testbed has no way to keep a job queued")

    def nap(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    running = None
    if target.hold is None:  # the queue runs one job at a time: a running job keeps the next one queued
        running = cluster(**target.options)(nap).submit(600)
        assert running.handle is not None and running.handle.native_id
        wait_for_native(target, running.handle.native_id, "running")
        queued = cluster(**target.options)(nap).submit(1)
    else:
        queued = cluster(**target.hold, **target.options)(nap).submit(1)
    assert queued.handle is not None and queued.handle.native_id
    assert target.queued_word in wait_for_native(target, queued.handle.native_id, target.queued_word)
    assert queued.cancel()
    with pytest.raises(concurrent.futures.CancelledError):
        queued.result(timeout=60)
    assert Job.attach(queued.job_id).status().state.value == "CANCELLED"
    if running is not None:
        assert running.cancel()


def test_a_two_day_time_request_is_accepted_and_queued_then_cancelled(target: Target) -> None:
    """``time="2-00:00:00"`` reaches the scheduler as 2 days in its own form (PBS: walltime=48:00:00)."""
    if target.hold is None or target.time_limit is None:
        pytest.skip(f"the {target.scheduler} target cannot keep a job queued or show its time limit")

    def nap(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    queued = cluster(time="2-00:00:00", **target.hold, **target.options)(nap).submit(1)
    assert queued.handle is not None and queued.handle.native_id
    assert target.queued_word in wait_for_native(target, queued.handle.native_id, target.queued_word)
    assert target.time_limit(queued.handle.native_id) == 2 * 24 * 3600
    assert queued.cancel()
    with pytest.raises(concurrent.futures.CancelledError):
        queued.result(timeout=60)


def test_an_impossible_request_fails_fast(target: Target) -> None:
    if target.impossible is None:
        pytest.skip(f"{target.scheduler} has no request it accepts but can never run")

    @cluster(**target.impossible, **target.options)
    def anything() -> int:
        return 1

    started = time.monotonic()
    with pytest.raises(JobError) as info:
        anything.submit().result(timeout=60)
    assert time.monotonic() - started < 60
    assert info.value.reason


def test_a_result_is_fetched_by_a_new_process_after_the_submitter_died(target: Target) -> None:
    job_id = submit_in_a_process_that_exits(
        target,
        """
        def answer(x):
            time.sleep(2)
            return x + 1
        """,
        "answer.submit(41)",
    )
    assert Job.attach(job_id).result(timeout=120) == 42


def test_the_cli_reports_status_and_result_and_cancels(target: Target) -> None:
    quick = submit_in_a_process_that_exits(target, "def quick():\n    return 'done'", "quick.submit()")
    listed = clustrix_cli("jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert quick in {job["job_id"] for job in json.loads(listed.stdout)}
    result = clustrix_cli("result", quick, "--wait", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["result"] == "done"
    status = clustrix_cli("status", quick, "--json")
    assert json.loads(status.stdout)["state"] == "COMPLETED"

    slow = submit_in_a_process_that_exits(target, "def slow():\n    time.sleep(600)", "slow.submit()")
    native = Job.attach(slow).handle.native_id
    assert native is not None
    wait_for_native(target, native, "running")
    cancel = clustrix_cli("cancel", slow, "--json")
    assert cancel.returncode == 0, cancel.stderr
    assert json.loads(cancel.stdout) == {"job_id": slow, "cancelled": True}
    deadline = time.monotonic() + 60
    while json.loads(clustrix_cli("status", slow, "--json").stdout)["state"] != "CANCELLED":
        assert time.monotonic() < deadline, "the job never ended CANCELLED"
        time.sleep(0.5)


def test_the_result_arrives_although_the_controller_restarted_while_the_job_ran(target: Target) -> None:
    if target.restart_controller is None:
        pytest.skip(f"the {target.scheduler} testbed cannot restart its controller")

    @cluster(**target.options)
    def patient(x: int) -> int:
        time.sleep(6)
        return 2 * x

    future = patient.submit(21)
    assert future.handle is not None and future.handle.native_id
    wait_for_native(target, future.handle.native_id, "running")
    target.restart_controller()
    assert future.result(timeout=180) == 42


def _job_python(target: Target) -> str:
    """The Python the target's jobs run (the replicated venv over SSH), built once per session."""
    from clustrix.batch.submit import JOB_NEEDS
    from clustrix.plugin.manager import transport_for
    from clustrix.remote.environment.capture import capture_environment
    from clustrix.remote.environment.prepare import prepare_remote_environment

    config = resolve_config(overrides=target.options)
    snapshot = capture_environment(config.get("replicate_distributions"))
    return prepare_remote_environment(transport_for(config), config, snapshot, needs=JOB_NEEDS).python


def test_a_full_job_file_system_is_a_clear_error_naming_the_path(target: Target) -> None:
    if not target.login_sees_new_mounts:
        pytest.skip(
            f"the {target.scheduler} testbed's {target.transport} side cannot see a file system mounted by the test"
        )
    python = _job_python(target)
    with full_file_system(target.remote_user, size="64k", parent=target.mount_dir) as full:
        with open(full / "filler", "wb") as filler:
            try:
                filler.write(b"\0" * 2**20)
            except OSError:
                pass  # now the file system is full
        options = {**target.options, "remote_work_dir": str(full / "jobs"), "python_executable": python}

        @cluster(**options)
        def anything(payload: bytes) -> int:
            return len(payload)

        started = time.monotonic()
        with pytest.raises(ClustrixError) as info:
            anything.submit(b"x" * 200_000).result(timeout=120)
        assert time.monotonic() - started < 120
        assert str(full) in str(info.value)


def test_an_outcome_that_does_not_fit_is_an_error_never_a_half_written_result(target: Target) -> None:
    if not target.jobs_see_new_mounts:
        pytest.skip(f"the {target.scheduler} testbed's jobs cannot see a file system mounted by the test")
    python = _job_python(target)
    with full_file_system(target.remote_user, size="1m", parent=target.mount_dir) as small:
        options: dict[str, Any] = {**target.options, "remote_work_dir": str(small), "python_executable": python}

        @cluster(**options)
        def too_big() -> bytes:
            return os.urandom(4 * 2**20)

        with pytest.raises(JobError) as info:
            too_big.submit().result(timeout=120)
        assert "No space left on device" in (info.value.stderr_tail or "") + str(info.value)


def test_a_running_map_counts_its_calls_done_failed_running_and_pending(target: Target) -> None:
    with held() as folder:  # call 0 returns, call 1 raises, calls 2 and 3 wait until let go
        calls = arguments(folder, 4, raising=1, first_held=2)
        futures = cluster(**target.options)(finish_raise_or_wait).submit_map(*calls)
        job = Job.attach(futures[0].job_id)
        deadline = time.monotonic() + 120
        while True:
            counts = job.status().counts
            assert counts is None or sum(counts.values()) == 4, counts
            if counts is not None and (counts["done"], counts["failed"]) == (1, 1) and counts["running"]:
                break
            assert time.monotonic() < deadline, f"the calls were never counted as running: {counts}"
            time.sleep(0.2)
        assert counts["running"] + counts["pending"] == 2
        listed = json.loads(clustrix_cli("status", job.job_id, "--json").stdout)["counts"]
        assert (listed["done"], listed["failed"], listed["running"] + listed["pending"]) == (1, 1, 2)
        release(folder)
        assert [f.exception(timeout=120) is None for f in futures] == [True, False, True, True]
    assert job.status().counts == {"done": 3, "failed": 1, "running": 0, "pending": 0}
