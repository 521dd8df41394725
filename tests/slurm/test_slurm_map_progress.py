"""A running map on the real SLURM testbed reports its calls done, failed, running and pending.

The calls of the map are packed into array tasks that claim them; the counts are per call.
They reach the progress bar, ``Job.status()``, and ``clustrix status`` / ``clustrix jobs`` in
another process. Held calls wait until the test lets them go, so every stage is known.
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from clustrix import Job, cluster, registry
from tests.held_calls import arguments, finish_raise_or_wait, held, release

pytestmark = pytest.mark.testbed_slurm

N_CALLS = 8


def counts_once(job: Job, wanted: Any, timeout: float = 60) -> dict[str, int]:
    """Ask ``job.status()`` until its counts satisfy ``wanted``; every answer on the way must add up."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, int] | None] = []
    while time.monotonic() < deadline:
        counts = job.status().counts
        seen.append(counts)
        if counts is not None:
            assert sum(counts.values()) == N_CALLS, counts
            if wanted(counts):
                return counts
        time.sleep(0.2)
    raise AssertionError(f"the counts never got there: {seen[-5:]}")


def clustrix_cli(*args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "clustrix.cli", *args, "--json"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_running_map_shows_calls_done_failed_running_and_pending_in_the_bar_status_and_cli(
    slurm_cluster: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mapped = cluster(
        cluster_type="slurm",
        remote_work_dir=str(tmp_path / "jobs"),
        python_executable=sys.executable,
        job_poll_interval=0.2,
    )(finish_raise_or_wait)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    with held() as folder:
        # calls 0-2 return at once, call 3 raises, calls 4-7 wait until the test lets them go
        calls = arguments(folder, N_CALLS, raising=3, first_held=4)
        result = pool.submit(mapped.map, *calls, progress=True)
        deadline = time.monotonic() + 60
        while not registry.list_jobs(limit=1) and time.monotonic() < deadline:
            time.sleep(0.05)
        (record,) = registry.list_jobs(limit=1)
        job = Job.attach(record.job_id)

        # calls 0-3 are over; 4-7 are claimed by running tasks or still wait for a task
        blocked = counts_once(job, lambda c: c["done"] == 3 and c["failed"] == 1 and c["running"] >= 1)
        assert blocked["running"] + blocked["pending"] == 4
        status = clustrix_cli("status", job.job_id)  # a new process attaches and polls
        assert status["state"] == "RUNNING"
        assert (status["counts"]["done"], status["counts"]["failed"]) == (3, 1)
        assert sum(status["counts"].values()) == N_CALLS
        (listed,) = [j for j in clustrix_cli("jobs") if j["job_id"] == job.job_id]
        assert listed["state"] == "RUNNING" and sum(listed["counts"].values()) == N_CALLS
        assert (listed["counts"]["done"], listed["counts"]["failed"]) == (3, 1)

        release(folder, 4, 5, 6)
        grown = counts_once(job, lambda c: c["done"] == 6)
        assert grown["failed"] == 1 and grown["running"] + grown["pending"] == 1

        release(folder, 7)
        with pytest.raises(ValueError, match="call 3 raises"):
            result.result(timeout=120)
    pool.shutdown()
    final = clustrix_cli("status", job.job_id)
    assert final["state"] == "FAILED"
    assert final["counts"] == {"done": 7, "failed": 1, "running": 0, "pending": 0}
    bar = capsys.readouterr().err
    # the bar drew the blocked stage (4 of 8 finished, one failed, the rest running or pending) and the end
    assert "4/8" in bar and "1 failed" in bar and "running" in bar
    assert "8/8" in bar
