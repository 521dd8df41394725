"""A new process that reads a pipeline's first stage to its end leaves the second stage waiting for it.

The laptop closed after submitting; the next morning a new process reads the first stage's
results. The first stage's tasks that found no call left (the first tasks to start took every
call) are still queued on a busy cluster, and the second stage, submitted by the process that is
gone, waits for them (``afterok``). Cancelling them ("sweeping") would leave its dependency unmet
for ever, and SLURM kills it. Only SLURM needs the check: SGE releases the jobs held for a deleted task,
PBS sweeps nothing.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from clustrix import Job

pytestmark = pytest.mark.testbed_slurm

N_CALLS = 16


def test_a_new_process_polling_a_first_stage_to_its_end_leaves_the_second_stage_its_queued_tasks(
    slurm_cluster: object, tmp_path: Path
) -> None:
    options = {
        "cluster_type": "slurm",
        "remote_work_dir": str(tmp_path / "jobs"),
        "python_executable": sys.executable,
        "job_poll_interval": 0.2,
        "memory": "8GB",  # two tasks at a time on the testbed's node: the others stay queued
    }
    script = textwrap.dedent(
        f"""
        import time
        from clustrix import cluster

        @cluster(**{options!r})
        def slow_double(x):
            time.sleep(0.5)
            return 2 * x

        @cluster(**{options!r})
        def total(values):
            return sum(values)

        first = slow_double.submit_map(range({N_CALLS}))  # a task per call
        second = total.submit(first)  # the whole first stage: afterok
        print(first[0].job_id, second.job_id, flush=True)
        time.sleep(600)  # killed here
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    ids = process.stdout.readline().split()
    process.kill()
    process.wait(timeout=30)
    assert len(ids) == 2, "the submitting process printed no job ids"
    first, second = (Job.attach(job_id) for job_id in ids)
    # the queue is busy: the first stage's tasks that have not started yet stay queued (two run at a time)
    native = str(first.handle.native_id)
    deadline = time.monotonic() + 60
    while "RUNNING" not in squeue_dependency(native):  # (a hold before any task started would hold them all)
        assert time.monotonic() < deadline, "no task of the first stage started"
        time.sleep(0.1)
    subprocess.run(["scontrol", "hold", native], check=True, capture_output=True)
    try:
        assert first.results(timeout=120) == [2 * x for x in range(N_CALLS)]  # polled to its end here
        assert "(unfulfilled)" in squeue_dependency(str(second.handle.native_id)), "the second stage was dropped"
    finally:
        subprocess.run(["scontrol", "release", native], check=False, capture_output=True)
    assert second.result(timeout=120) == sum(2 * x for x in range(N_CALLS))


def squeue_dependency(native_id: str) -> str:
    """What SLURM says the job still waits for (``%E``), or why it is gone."""
    done = subprocess.run(
        ["squeue", "--noheader", "--states=all", f"--jobs={native_id}", "--format=%T %E"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout + done.stderr
