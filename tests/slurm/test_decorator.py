"""``@cluster`` end to end on the real SLURM testbed: values, exceptions, maps, errors, cancel, attach."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from clustrix import Job, JobCancelledError, JobOutOfMemoryError, cluster, reset_config
from clustrix_slurm import SbatchRejectedError

pytestmark = pytest.mark.testbed_slurm


@pytest.fixture
def slurm_options(slurm_cluster, transport_options, tmp_path, monkeypatch, fresh_plugins):
    """``@cluster`` options for SLURM, once on the login node itself and once over SSH."""
    monkeypatch.setenv("CLUSTRIX_DATA_DIR", str(tmp_path / "registry"))
    reset_config()
    yield {"cluster_type": "slurm", "job_poll_interval": 0.2, **transport_options}
    reset_config()


def test_a_decorated_function_returns_its_value_and_reraises_valueerror(slurm_options):
    @cluster(cores=1, memory="200MB", time="00:05:00", **slurm_options)
    def divide(a, b):
        if b == 0:
            raise ValueError("b must not be zero")
        return a / b

    assert divide(1, 4) == 0.25
    with pytest.raises(ValueError, match="b must not be zero") as info:
        divide(1, 0)
    assert "divide" in str(info.value.__cause__)


def test_map_returns_results_in_order_from_one_job_array(slurm_options):
    @cluster(**slurm_options)
    def square(x):
        return x * x

    futures = square.submit_map(range(100))
    assert len({f.job_id for f in futures}) == 1
    assert [f.result(timeout=120) for f in futures] == [x * x for x in range(100)]


def test_an_out_of_memory_job_raises_joboutofmemoryerror_with_slurms_reason(slurm_options):
    @cluster(memory="100M", **slurm_options)
    def hog():
        block = bytearray(400 * 2**20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(5)

    with pytest.raises(JobOutOfMemoryError) as info:
        hog()
    assert "OUT_OF_MEMORY" in str(info.value)


def wait_for_squeue_state(native_id: str, state: str, timeout: float = 30) -> str:
    """squeue's states of the job (finished ones included), once ``state`` is among them or at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        argv = ["squeue", "-h", "-t", "all", "-j", native_id, "-o", "%T"]
        listed = subprocess.run(argv, capture_output=True, text=True).stdout
        if state in listed or time.monotonic() > deadline:
            return listed
        time.sleep(0.1)


def test_future_cancel_scancels_a_running_job(slurm_options):
    @cluster(**slurm_options)
    def nap():
        time.sleep(600)

    future = nap.submit()
    native = future.handle.native_id
    wait_for_squeue_state(native, "RUNNING")
    assert future.cancel()
    with pytest.raises(concurrent.futures.CancelledError):
        future.result()
    assert "CANCELLED" in wait_for_squeue_state(native, "CANCELLED")
    assert issubclass(JobCancelledError, concurrent.futures.CancelledError)


def test_clustrix_cancel_from_a_new_process_scancels_a_running_job(slurm_options):
    """The submitting process exits; ``clustrix cancel ID`` from another one ends the running job."""
    script = textwrap.dedent(
        f"""
        import time
        from clustrix import cluster
        @cluster(**{slurm_options!r})
        def nap():
            time.sleep(600)
        print(nap.submit().job_id)
        """
    )
    submitted = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    job_id = submitted.stdout.strip().splitlines()[-1]
    native = Job.attach(job_id).handle.native_id
    assert "RUNNING" in wait_for_squeue_state(native, "RUNNING")

    cancel = subprocess.run(
        [sys.executable, "-m", "clustrix.cli", "cancel", job_id, "--json"], capture_output=True, text=True
    )
    assert cancel.returncode == 0, cancel.stderr
    assert json.loads(cancel.stdout) == {"job_id": job_id, "cancelled": True}
    assert "CANCELLED" in wait_for_squeue_state(native, "CANCELLED")
    status = subprocess.run(
        [sys.executable, "-m", "clustrix.cli", "status", job_id, "--json"], capture_output=True, text=True, check=True
    )
    assert json.loads(status.stdout)["state"] == "CANCELLED"


def test_an_impossible_request_fails_at_submit_with_slurms_message(slurm_options, slurm_cluster):
    @cluster(memory=f"{slurm_cluster.real_memory_mb * 4}MiB", **slurm_options)
    def anything():
        return 1

    with pytest.raises(SbatchRejectedError, match="Requested node configuration is not available"):
        anything()


def test_a_job_still_pending_when_its_submitter_dies_is_fetched_by_a_new_process(slurm_options, tmp_path):
    """The submitter exits while the job waits behind a dependency; a new process attaches later."""
    blocker = subprocess.run(
        ["sbatch", "--parsable", "--output=/dev/null", "--wrap=sleep 3"], capture_output=True, text=True, check=True
    ).stdout.strip()
    script = textwrap.dedent(
        f"""
        import sys
        from clustrix import cluster
        @cluster(sbatch_directives=["--dependency=afterany:{blocker}"], **{slurm_options!r})
        def answer(x):
            return x + 1
        future = answer.submit(41)
        print(future.job_id)
        """
    )
    env = {**os.environ, "CLUSTRIX_DATA_DIR": os.environ["CLUSTRIX_DATA_DIR"]}
    submitted = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    job_id = submitted.stdout.strip().splitlines()[-1]
    job = Job.attach(job_id)
    assert job.status().state.value == "PENDING"
    assert job.result(timeout=60) == 42
