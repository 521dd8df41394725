"""Requeue and checkpoint() on the real Grid Engine: ``-notify`` + ``-r y``, SIGUSR2 at ``h_rt``, ``qmod -rj``.

With ``-notify`` Grid Engine sends SIGUSR2 the queue's ``notify`` time (5 s on the testbed,
60 s by default) before it kills a job, also when ``h_rt`` runs out. The runner then calls the
function's ``checkpoint()``, stores the call to resume and runs ``qmod -rj JOB.TASK`` (the job
is rerunnable, ``-r y``): the task is queued again and resumes from its checkpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest

from clustrix import Job, cluster, configure
from clustrix.errors import JobCancelledError
from clustrix.jobs import JobState
from tests.testbed import sge as sge_testbed

pytestmark = pytest.mark.testbed_sge


class CountTo:
    """Counts to ``n`` in steps of ``step_seconds``; ``checkpoint`` resumes from the last step reached."""

    def __init__(self, step_seconds: float = 0.5) -> None:
        self.step_seconds = step_seconds
        self.reached = 0

    def __call__(self, n: int, start: int = 0, resumed_from: int | None = None) -> dict[str, Any]:
        total = 0
        for i in range(start, n):
            time.sleep(self.step_seconds)
            total += i
            self.reached = i + 1
        return {
            "total": total + sum(range(start)),
            "resumed_from": resumed_from,
            # Grid Engine sets RESTARTED=1 in a job that runs again after qmod -rj
            "restarted": os.environ.get("RESTARTED"),
            "job": os.environ.get("JOB_ID"),
        }

    def checkpoint(self, n: int, start: int = 0, resumed_from: int | None = None) -> tuple[Any, tuple[Any, ...], dict]:
        return self, (n,), {"start": self.reached, "resumed_from": self.reached}


def test_a_checkpointing_call_past_h_rt_is_requeued_and_resumes(transport_options):
    """Over SSH the unprivileged clustrix-test's own runner runs qmod -rj on its task."""
    configure(**transport_options, job_poll_interval=0.3)
    count = cluster(time="00:00:10")(CountTo(step_seconds=0.5))
    result = count.submit(40).result(timeout=180)  # 20 s of work under a 10 s h_rt
    assert result["total"] == sum(range(40))
    assert result["resumed_from"] is not None and result["resumed_from"] > 0
    assert result["restarted"] == "1"


def test_qdel_of_a_checkpointing_job_cancels_it_instead_of_requeueing(sge_cell, tmp_path):
    """qdel sends SIGUSR2 first (-notify): the runner checkpoints and asks for a requeue, but the job stays deleted."""
    work = tmp_path / "jobs"
    work.mkdir(mode=0o700)
    configure(cluster_type="sge", remote_work_dir=str(work), python_executable=sys.executable, job_poll_interval=0.2)
    future = cluster(time="00:05:00")(CountTo(step_seconds=0.5)).submit(600)
    job = Job.attach(future.job_id)
    deadline = time.monotonic() + 60
    while job.status().state is not JobState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(2)  # past the runner's start: the signal handler is set
    native_id = future.handle.native_id
    qdel = subprocess.run(["qdel", native_id], capture_output=True, text=True, env={**os.environ, **sge_testbed.ENV})
    assert qdel.returncode == 0, qdel.stderr
    with pytest.raises(JobCancelledError, match="deleted while its runner checkpointed"):
        future.result(timeout=60)
    time.sleep(3)  # a requeue would show the task queued again by now
    listed = subprocess.run(
        ["qstat", "-j", native_id], capture_output=True, text=True, env={**os.environ, **sge_testbed.ENV}
    )
    assert listed.returncode != 0, listed.stdout
