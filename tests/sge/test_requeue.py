"""Requeue and checkpoint() on the real Grid Engine: ``-notify`` + ``-r y``, SIGUSR2 at ``h_rt``, ``qmod -rj``.

With ``-notify`` Grid Engine sends SIGUSR2 the queue's ``notify`` time (5 s on the testbed,
60 s by default) before it kills a job, also when ``h_rt`` runs out. The runner then calls the
function's ``checkpoint()``, stores the call to resume and runs ``qmod -rj JOB.TASK`` (the job
is rerunnable, ``-r y``): the task is queued again and resumes from its checkpoint.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from typing import Any

import pytest

from clustrix import Job, cluster, configure
from clustrix.errors import JobCancelledError
from clustrix.plugin.types import JobState
from tests.testbed import sge as sge_testbed

pytestmark = pytest.mark.testbed_sge


def step(seed: int, i: int) -> int:
    """Step ``i`` of walk ``seed``: the same on every run, so a resumed walk ends where an unbroken one would."""
    return 1 if random.Random(seed * 1_000_003 + i).random() < 0.5 else -1


class Walk:
    """A slow random walk that can checkpoint: ``checkpoint()`` resumes from the position reached."""

    def __init__(self, step_seconds: float = 0.5) -> None:
        self.step_seconds = step_seconds
        self.position = 0
        self.steps_done = 0

    def __call__(self, n_steps: int, seed: int, position: int = 0, start: int = 0) -> dict[str, Any]:
        self.position, self.steps_done = position, start
        for i in range(start, n_steps):
            time.sleep(self.step_seconds)
            self.position += step(seed, i)
            self.steps_done = i + 1
        # Grid Engine sets RESTARTED=1 in a job that runs again after qmod -rj
        return {"position": self.position, "resumed_at": start, "restarted": os.environ.get("RESTARTED")}

    def checkpoint(self, n_steps: int, seed: int, position: int = 0, start: int = 0) -> tuple[Any, ...]:
        return self, (n_steps, seed), {"position": self.position, "start": self.steps_done}


def test_a_checkpointing_call_past_h_rt_is_requeued_and_resumes(transport_options):
    """Over SSH the unprivileged clustrix-test's own runner runs qmod -rj on its task."""
    configure(**transport_options, job_poll_interval=0.3)
    walk = cluster(time="00:00:10")(Walk(step_seconds=0.5))
    result = walk.submit(40, 7).result(timeout=180)  # 20 s of walking under a 10 s h_rt
    assert result["position"] == sum(step(7, i) for i in range(40))
    assert result["resumed_at"] > 0  # the run that delivered it started from the checkpoint
    assert result["restarted"] == "1"


def test_qdel_of_a_checkpointing_job_cancels_it_instead_of_requeueing(sge_cell, tmp_path):
    """qdel sends SIGUSR2 first (-notify): the runner checkpoints and asks for a requeue, but the job stays deleted."""
    work = tmp_path / "jobs"
    work.mkdir(mode=0o700)
    configure(cluster_type="sge", remote_work_dir=str(work), python_executable=sys.executable, job_poll_interval=0.2)
    future = cluster(time="00:05:00")(Walk(step_seconds=0.5)).submit(600, 1)
    job = Job.attach(future.job_id)
    deadline = time.monotonic() + 60
    while job.status().state is not JobState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(2)  # past the runner's start: the signal handler is set
    native_id = future.handle.native_id
    qdel = subprocess.run(["qdel", native_id], capture_output=True, text=True, env={**os.environ, **sge_testbed.ENV})
    assert qdel.returncode == 0, qdel.stderr
    with pytest.raises(JobCancelledError, match="deleted"):
        future.result(timeout=60)

    def listed() -> bool:
        env = {**os.environ, **sge_testbed.ENV}
        return subprocess.run(["qstat", "-j", native_id], capture_output=True, env=env).returncode == 0

    deadline = time.monotonic() + 30  # the kill comes the notify time (5 s) after the warning
    while listed():
        assert time.monotonic() < deadline, f"job {native_id} is still in qstat"
        time.sleep(0.2)
    time.sleep(3)  # a requeue would show the task queued again by now
    assert not listed()
    assert "clustrix.remote.runner: call 0 checkpointed" in Job.attach(future.job_id).logs("stderr")


def double_once_restarted(x: int) -> tuple[int, str | None]:
    """Runs until killed on the first run; returns at once when Grid Engine runs it again."""
    restarted = os.environ.get("RESTARTED")
    if restarted != "1":
        time.sleep(300)
    return 2 * x, restarted


def test_a_running_task_requeued_by_qmod_rj_still_delivers_its_result(sge_cell, tmp_path):
    """An administrator's ``qmod -rj JOB.TASK`` (the job is rerunnable, -r y): the rerun delivers the result."""
    work = tmp_path / "jobs"
    work.mkdir(mode=0o700)
    configure(cluster_type="sge", remote_work_dir=str(work), python_executable=sys.executable, job_poll_interval=0.3)
    future = cluster(time="00:10:00")(double_once_restarted).submit(21)
    job = Job.attach(future.job_id)
    deadline = time.monotonic() + 60
    while job.status().state is not JobState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(2)  # the runner has started the call
    env = {**os.environ, **sge_testbed.ENV}
    requeue = subprocess.run(["qmod", "-rj", f"{future.handle.native_id}.1"], capture_output=True, text=True, env=env)
    assert requeue.returncode == 0, requeue.stderr
    assert future.result(timeout=180) == (42, "1")
