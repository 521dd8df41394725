"""Through ``@cluster``: calls, exceptions, ``__main__`` functions, and results that outlive the caller."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from clustrix import Job, cluster
from tests.ssh.helpers import REPLICATE

pytestmark = pytest.mark.testbed_ssh
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from clustrix import cluster

    options = json.loads(sys.argv[1])

    @cluster(**options)
    def square_plus(x, offset=0, nap=0.0):   # defined in __main__: pickled by value
        time.sleep(nap)
        return x * x + offset

    if sys.argv[2] == "call":
        print(json.dumps(square_plus(7, offset=1)))
    elif sys.argv[2] == "submit-long":
        print(square_plus.submit(9, nap=600.0).job_id, flush=True)
    else:
        future = square_plus.submit(9, nap=3.0)
        print(future.job_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)   # the submitter dies; the job does not
    """
)


@pytest.fixture
def options(ssh_config: dict[str, Any]) -> dict[str, Any]:
    return {**ssh_config, "replicate_distributions": REPLICATE, "job_poll_interval": 0.2}


def run_script(tmp_path: Path, options: dict[str, Any], mode: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "submitter.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, str(script), json.dumps(options), mode], capture_output=True, text=True, env=env, timeout=180
    )


def test_a_function_defined_in_main_runs_remotely(tmp_path: Path, options: dict[str, Any]) -> None:
    proc = run_script(tmp_path, options, "call")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == 50


def test_a_result_is_fetched_by_a_new_process_after_the_submitter_was_killed(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    proc = run_script(tmp_path, options, "submit-and-die")
    assert proc.returncode == -9, proc.stderr
    job_id = proc.stdout.split()[0]
    job = Job.attach(job_id)
    assert job.result(timeout=60) == 81


def live_members(pgid: int) -> int:
    """Processes of the group that are not zombies (the sshd host is this machine)."""
    listed = subprocess.run(["ps", "-e", "-o", "pgid=,stat="], capture_output=True, text=True, check=True)
    return sum(1 for line in listed.stdout.splitlines() if line.split()[0] == str(pgid) and line.split()[1][0] != "Z")


def test_clustrix_cancel_from_a_new_process_kills_the_remote_job(tmp_path: Path, options: dict[str, Any]) -> None:
    proc = run_script(tmp_path, options, "submit-long")
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.split()[0]
    native_id = Job.attach(job_id).handle.native_id or ""
    pgid = int(native_id.split(":")[0])  # the native id is PGID:JOBID
    assert live_members(pgid) > 0  # the call is running

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cancel = subprocess.run(
        [sys.executable, "-m", "clustrix.cli", "cancel", job_id, "--json"], capture_output=True, text=True, env=env
    )
    assert cancel.returncode == 0, cancel.stderr
    assert json.loads(cancel.stdout) == {"job_id": job_id, "cancelled": True}
    assert Job.attach(job_id).wait(timeout=30).state.value == "CANCELLED"
    assert live_members(pgid) == 0  # nothing of the job's process group runs on


def test_the_decorator_returns_values_and_reraises_remote_exceptions(options: dict[str, Any]) -> None:
    @cluster(cores=1, **options)
    def halve(x: int) -> float:
        if x < 0:
            raise ValueError(f"negative: {x}")
        return x / 2

    assert halve(9) == 4.5
    assert halve.map(range(4)) == [0, 0.5, 1.0, 1.5]
    with pytest.raises(ValueError, match="negative: -3") as caught:
        halve(-3)
    assert "Remote traceback" in str(caught.value.__cause__)
