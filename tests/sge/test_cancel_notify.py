"""Cancelling a running call frees its Grid Engine slot at once, not after the queue's ``notify`` time.

Jobs are submitted with ``-notify``: ``qdel`` sends SIGUSR2 and kills only the queue's notify
time later (60 s by default). clustrix's cancel marks the job cancelled first, so the runner
ends at that warning whether or not the call checkpoints, and the job leaves the queue.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clustrix import Job, cluster, configure
from clustrix.plugin.types import JobState
from tests.testbed import sge as sge_testbed

pytestmark = pytest.mark.testbed_sge

ENV = {**os.environ, **sge_testbed.ENV}
NOTIFY = "00:01:00"  # Grid Engine's default; the testbed's queues have 5 s


def qconf(*args: str) -> str:
    done = subprocess.run(["qconf", *args], capture_output=True, text=True, env=ENV, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def default_notify_time(sge_cell: object) -> Iterator[int]:
    """Both queues get Grid Engine's default notify time (60 s) for the test, then their own back."""
    queues = (sge_testbed.QUEUE, sge_testbed.SHORT_QUEUE)
    before = {q: re.search(r"^notify\s+(\S+)", qconf("-sq", q), re.M).group(1) for q in queues}  # type: ignore[union-attr]
    try:
        for queue in queues:
            qconf("-mattr", "queue", "notify", NOTIFY, queue)
        yield 60
    finally:
        for queue, value in before.items():
            qconf("-mattr", "queue", "notify", value, queue)


def sleep_without_checkpoint(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def listed(native_id: str) -> bool:
    return subprocess.run(["qstat", "-j", native_id], capture_output=True, env=ENV).returncode == 0


def test_cancelling_a_running_call_that_does_not_checkpoint_frees_the_slot_well_before_the_notify_time(
    default_notify_time: int, tmp_path: Path
) -> None:
    work = tmp_path / "jobs"
    work.mkdir(mode=0o700)
    configure(cluster_type="sge", remote_work_dir=str(work), python_executable=sys.executable, job_poll_interval=0.2)
    future = cluster(time="00:30:00")(sleep_without_checkpoint).submit(600)
    job = Job.attach(future.job_id)
    claim = Path(job.handle.job_dir or "", "out", "0.claim")
    deadline = time.monotonic() + 60
    while not (claim.exists() and job.status().state is JobState.RUNNING):  # the call runs, its handler is set
        assert time.monotonic() < deadline, f"the job never started: {job.status()}"
        time.sleep(0.2)
    native_id = future.handle.native_id
    started = time.monotonic()
    assert future.cancel()
    while listed(native_id):
        waited = time.monotonic() - started
        assert waited < default_notify_time / 2, f"job {native_id} still holds its slot after {waited:.0f} s"
        time.sleep(0.2)
    print(f"cancel to out of the queue: {time.monotonic() - started:.1f} s (notify time {default_notify_time} s)")
    assert job.status().state is JobState.CANCELLED
    assert "the running call ends now" in job.logs("stderr")
