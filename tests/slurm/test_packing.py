"""Dynamic packing: array tasks claim calls, steal unclaimed ones, and re-runs are idempotent.

The runner is run for real (as the file SLURM runs); the last tests use the SLURM testbed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clustrix_testsched_jobdir import outcome_files, read_outcomes, stage

from clustrix.batch.status import status_from_outcomes
from clustrix.batch.submit import tasks_for
from clustrix.config.resources import Resources
from clustrix.config.settings import ClusterConfig
from clustrix.plugin.transport import LocalTransport
from clustrix.plugin.types import JobSpec, JobState
from clustrix.remote import runner
from clustrix.remote.jobdir import plan_tasks
from clustrix_slurm.script import array_spec
from tests.slurm.helpers import Direct, poll_until_final, slurm_config

RUNNER = runner.__file__


def run_task(job_dir: str, task: int, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, RUNNER, job_dir, "--task", str(task)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def record_and_double(log_dir: str, x: int) -> int:
    """Doubles ``x`` and leaves a file per execution, so tests can count re-runs."""
    Path(log_dir, f"ran-{x}-{time.monotonic_ns()}").touch()
    return 2 * x


def stage_claiming(tmp_path: Path, n_calls: int, n_tasks: int) -> tuple[str, str]:
    log_dir = tmp_path / "executions"
    log_dir.mkdir()
    spec = JobSpec(
        name="record_and_double",
        func=record_and_double,
        arguments=[((str(log_dir), i), {}) for i in range(n_calls)],
        config=ClusterConfig({}),
    )
    job_dir = stage(LocalTransport(), str(tmp_path / "work"), spec, plan_tasks(n_calls, n_tasks), claim=True)
    return job_dir, str(log_dir)


def executions(log_dir: str) -> list[int]:
    return sorted(int(name.split("-")[1]) for name in os.listdir(log_dir))


def test_the_first_task_to_start_steals_every_unclaimed_call(tmp_path: Path) -> None:
    job_dir, log_dir = stage_claiming(tmp_path, n_calls=10, n_tasks=10)
    assert run_task(job_dir, 3).returncode == 0
    assert executions(log_dir) == list(range(10))
    outcomes = read_outcomes(LocalTransport(), job_dir, 10)
    assert [o.value for o in outcomes if o is not None] == [2 * i for i in range(10)]
    holders = {Path(job_dir, runner.claim_name(i)).read_text().split()[0] for i in range(10)}
    assert holders == {"3"}


def test_a_task_that_starts_after_all_calls_are_claimed_runs_nothing_and_exits_zero(tmp_path: Path) -> None:
    job_dir, log_dir = stage_claiming(tmp_path, n_calls=4, n_tasks=4)
    run_task(job_dir, 0)
    late = run_task(job_dir, 2)
    assert late.returncode == 0
    assert executions(log_dir) == [0, 1, 2, 3]
    assert Path(job_dir, runner.exit_name(2)).read_text().strip() == "0"


def test_a_call_claimed_by_another_task_is_left_to_it(tmp_path: Path) -> None:
    job_dir, log_dir = stage_claiming(tmp_path, n_calls=3, n_tasks=3)
    Path(job_dir, runner.claim_name(1)).write_text("2\nothernode 999\n")
    run_task(job_dir, 0)
    assert executions(log_dir) == [0, 2]
    assert not Path(job_dir, runner.outcome_name(1)).exists()


def test_a_requeued_task_takes_its_own_claims_back_and_skips_finished_calls(tmp_path: Path) -> None:
    """Task 1's earlier run claimed calls 1 and 2, finished 1, and was killed during 2."""
    job_dir, log_dir = stage_claiming(tmp_path, n_calls=3, n_tasks=3)
    run_task(job_dir, 1)  # a complete run: claims and finishes everything
    before = executions(log_dir)
    Path(job_dir, runner.outcome_name(2)).unlink()  # as if killed before writing call 2's outcome
    Path(job_dir, runner.exit_name(1)).unlink()
    rerun = run_task(job_dir, 1)
    assert rerun.returncode == 0
    assert executions(log_dir) == sorted([*before, 2])
    assert read_outcomes(LocalTransport(), job_dir, 3)[2].value == 4  # type: ignore[union-attr]


def test_failed_calls_leave_a_marker_so_status_needs_no_unpickling(tmp_path: Path) -> None:
    def half_of_even(x: int) -> int:
        if x % 2:
            raise ValueError(f"{x} is odd")
        return x // 2

    spec = JobSpec(
        name="half_of_even", func=half_of_even, arguments=[((i,), {}) for i in range(4)], config=ClusterConfig({})
    )
    job_dir = stage(LocalTransport(), str(tmp_path / "work"), spec, plan_tasks(4, 4), claim=True)
    # task 0 ran its own call 0 (fine) and took calls 1-3: the failures of calls it took are not its own
    assert run_task(job_dir, 0).returncode == 0
    files = outcome_files(os.listdir(Path(job_dir, runner.OUT_DIR)))
    assert files.complete(4)
    assert files.failed == {1, 3}
    status = status_from_outcomes(files.failed)
    assert status.state is JobState.FAILED
    assert "1, 3" in (status.reason or "")


def test_the_listing_reader_ignores_temporary_and_foreign_files() -> None:
    files = outcome_files(["0.pkl", "1.pkl", ".tmp-abc", "1.failed", "2.failed", "task-0.exit", "x.pkl", "3.claim"])
    assert files.done == {0, 1}
    assert files.failed == {1}  # a marker without its outcome is a call still being written
    assert files.exit_tasks == {0}
    assert files.complete(2) and not files.complete(3)


def test_a_map_larger_than_maxarraysize_is_one_array_with_task_ids_below_it() -> None:
    n_calls, max_array_size = 25_000, 10_001  # the testbed's MaxArraySize; the default is 1001
    n_tasks = tasks_for(n_calls, None, max_array_size)
    assert n_tasks == max_array_size
    assert array_spec(n_tasks, None) == "0-10000"  # SLURM refuses an index >= MaxArraySize
    tasks = plan_tasks(n_calls, n_tasks)
    assert sorted(i for share in tasks for i in share) == list(range(n_calls))  # every call is in a share
    assert {len(share) for share in tasks} == {2, 3}
    assert tasks_for(100, 25, max_array_size) == 4  # calls_per_task packs further
    assert tasks_for(3, 25, max_array_size) == 1


def test_a_claiming_task_tries_its_own_share_first_then_the_calls_after_it() -> None:
    assert runner.call_order(6, [2, 3]) == [2, 3, 4, 5, 0, 1]
    assert runner.call_order(3, []) == [0, 1, 2]


# ---- on the real cluster ----------------------------------------------------


def nap_and_double(x: int) -> int:
    time.sleep(2)
    return 2 * x


def identity(x: int) -> int:
    return x


@pytest.mark.testbed_slurm
def test_tiny_calls_finish_in_the_first_tasks_and_the_rest_of_the_array_leaves_the_queue(
    slurm_cluster: object, tmp_path: Path, fresh_plugins: None
) -> None:
    from clustrix.plugin.manager import get_scheduler

    config = slurm_config(str(tmp_path / "jobs"))
    scheduler = get_scheduler("slurm")
    spec = JobSpec(name="identity", func=identity, arguments=[((i,), {}) for i in range(200)], config=config)
    handle = scheduler.submit(spec, wake=lambda: None)
    assert handle.data["tasks"] == 200
    status, _ = poll_until_final(scheduler, handle, config, timeout=120, interval=0.1)
    assert status.state is JobState.COMPLETED
    assert [o.value for o in scheduler.fetch(handle, config)] == list(range(200))
    holders = {Path(handle.job_dir, runner.claim_name(i)).read_text().split()[0] for i in range(200)}
    assert len(holders) < 200  # a handful of tasks did all the work
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        queue = subprocess.run(
            ["squeue", "--noheader", "--array", f"--jobs={handle.native_id}", "--states=PENDING", "--format=%i"],
            capture_output=True,
            text=True,
        )
        if not queue.stdout.strip():
            break
        time.sleep(0.2)
    assert not queue.stdout.strip(), "array tasks were left pending after every call was done"


@pytest.mark.testbed_slurm
def test_long_calls_still_run_in_parallel_array_tasks(slurm_cluster: object, tmp_path: Path) -> None:
    config = slurm_config(str(tmp_path / "jobs"))
    from clustrix.batch.engine import BatchScheduler
    from clustrix_slurm import SlurmDialect

    scheduler = Direct(BatchScheduler(SlurmDialect()))
    spec = JobSpec(
        name="nap_and_double",
        func=nap_and_double,
        arguments=[((i,), {}) for i in range(4)],
        resources=Resources.parse(cores=1, memory="100M"),
        config=config,
    )
    handle = scheduler.submit(spec, wake=lambda: None)
    status, _ = poll_until_final(scheduler, handle, config, timeout=120)
    assert status.state is JobState.COMPLETED
    assert [o.value for o in scheduler.fetch(handle, config)] == [0, 2, 4, 6]
    holders = {Path(handle.job_dir, runner.claim_name(i)).read_text().split()[0] for i in range(4)}  # type: ignore[arg-type]
    assert len(holders) >= 2
