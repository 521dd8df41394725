"""On the real SLURM testbed (login node, local transport): nested decorated calls stay in their job; methods travel."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from clustrix import cluster

pytestmark = pytest.mark.testbed_slurm


@pytest.fixture
def login_node(slurm_cluster: Any, tmp_path: Path) -> dict[str, Any]:
    work = tmp_path / "jobs"
    work.mkdir(mode=0o700)
    return {
        "cluster_type": "slurm",
        "remote_work_dir": str(work),
        "python_executable": sys.executable,
        "job_poll_interval": 0.2,
    }


def _slurm_job_ids() -> set[str]:
    """The ids of every job the controller knows of (finished ones stay listed for MinJobAge: 300 s)."""
    out = subprocess.run(["squeue", "--noheader", "--states=all", "--format=%F"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_a_decorated_function_called_in_a_slurm_job_runs_inside_it_and_submits_no_second_job(
    login_node: dict[str, Any],
) -> None:
    @cluster(**login_node)
    def inner(x: int) -> tuple[int, str | None, int]:
        return x * 10, os.environ.get("SLURM_JOB_ID"), os.getpid()

    @cluster(**login_node)
    def outer(x: int) -> dict[str, Any]:
        future = inner.submit(x + 1)
        return {
            "job": os.environ.get("SLURM_JOB_ID"),
            "pid": os.getpid(),
            "call": inner(x),
            "map": inner.map([x, x + 2]),
            "submit": future.result(),
            "submit_job_id": future.job_id,
        }

    before = _slurm_job_ids()
    future = outer.submit(1)
    result = future.result(timeout=300)
    job, pid = result["job"], result["pid"]
    assert future.handle is not None and job == future.handle.native_id
    assert result["call"] == (10, job, pid)
    assert result["map"] == [(10, job, pid), (30, job, pid)]
    assert result["submit"] == (20, job, pid) and result["submit_job_id"] is None
    assert _slurm_job_ids() - before == {job}  # the outer call's job and no other
    assert [p.name for p in Path(login_node["remote_work_dir"]).iterdir()] == [future.job_id]


def test_a_decorated_method_runs_as_a_slurm_job_with_self_sent_by_value(login_node: dict[str, Any]) -> None:
    class Sample:
        def __init__(self, label: str, data: list[int]) -> None:
            self.label = label
            self.data = data

        @cluster(**login_node)
        def describe(self, x: int) -> tuple[str, list[int], str | None, int]:
            self.data.append(x)  # the job's copy of self
            return self.label, self.data, os.environ.get("SLURM_JOB_ID"), os.getpid()

    sample = Sample(uuid.uuid4().hex, [1, 2])
    future = sample.describe.submit(3)
    label, data, job, pid = future.result(timeout=300)
    assert future.handle is not None and job == future.handle.native_id and pid != os.getpid()
    assert (label, data) == (sample.label, [1, 2, 3])
    assert sample.data == [1, 2]  # self went by value: the caller's object is unchanged
