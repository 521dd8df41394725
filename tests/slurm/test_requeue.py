"""Requeue and checkpoint(): the runner on SIGUSR2, and jobs requeued on the real SLURM testbed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from clustrix_testsched_jobdir import read_outcomes, stage

from clustrix.batch.engine import BatchScheduler
from clustrix.config.resources import Resources
from clustrix.config.settings import ClusterConfig, resolve_config
from clustrix.plugin.manager import get_scheduler
from clustrix.plugin.transport import LocalTransport
from clustrix.plugin.types import JobSpec, JobState, JobStatus
from clustrix.remote import runner
from clustrix.remote.jobdir import plan_tasks
from clustrix_slurm.dialect import SlurmDialect, to_job_state
from tests.slurm.helpers import poll_until_final, slurm_config, wait_for_state
from tests.testbed.slurm import SlurmTestbed


class CountTo:
    """Counts to ``n`` in steps of ``step_seconds``; ``checkpoint`` resumes from the last step reached."""

    def __init__(self, step_seconds: float = 0.1) -> None:
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
            "restarts": os.environ.get("SLURM_RESTART_COUNT", "0"),
        }

    def checkpoint(self, n: int, start: int = 0, resumed_from: int | None = None) -> tuple[Any, tuple[Any, ...], dict]:
        return self, (n,), {"start": self.reached, "resumed_from": self.reached}


def slow_double(x: int) -> int:
    time.sleep(3)
    return 2 * x


def double_and_restarts(x: int, nap: float) -> tuple[int, str]:
    time.sleep(nap)
    return 2 * x, os.environ.get("SLURM_RESTART_COUNT", "0")


def double_once_restarted(x: int) -> tuple[int, str]:
    """Runs until killed on the first run; returns at once on a requeued one."""
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    if restarts == "0":
        time.sleep(300)
    return 2 * x, restarts


# ---- the runner alone: SIGUSR2 with a requeue argv ---------------------------


def start_runner(job_dir: str, requeue_argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, runner.__file__, job_dir, "--task", "0"],
        env={**os.environ, runner.REQUEUE_ENV: json.dumps(requeue_argv)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_file(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)


def test_sigusr2_checkpoints_the_call_requeues_and_a_rerun_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    counter = CountTo(step_seconds=0.05)
    spec = JobSpec(name="count", func=counter, arguments=[((60,), {})], config=ClusterConfig({}))
    job_dir = stage(LocalTransport(), str(tmp_path / "work"), spec, plan_tasks(1), claim=True)
    marker = tmp_path / "requeued"
    proc = start_runner(job_dir, ["touch", str(marker)])
    wait_for_file(Path(job_dir, runner.claim_name(0)))
    time.sleep(0.8)
    proc.send_signal(signal.SIGUSR2)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == runner.REQUEUED_EXIT, stderr
    assert marker.exists()  # the requeue argv ran
    assert Path(job_dir, runner.checkpoint_name(0)).exists()
    assert not Path(job_dir, runner.exit_name(0)).exists()  # the task is not over
    assert not Path(job_dir, runner.outcome_name(0)).exists()

    rerun = subprocess.run(
        [sys.executable, runner.__file__, job_dir, "--task", "0"], capture_output=True, text=True, timeout=60
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "resumes from its checkpoint" in rerun.stderr
    [outcome] = read_outcomes(LocalTransport(), job_dir, 1)
    assert outcome is not None and outcome.value["total"] == sum(range(60))
    assert outcome.value["resumed_from"] > 0
    assert not Path(job_dir, runner.checkpoint_name(0)).exists()


def test_sigusr2_without_checkpoint_finishes_the_running_call_then_requeues_for_the_rest(tmp_path: Path) -> None:
    spec = JobSpec(
        name="double", func=double_and_restarts, arguments=[((i, 0.6), {}) for i in range(4)], config=ClusterConfig({})
    )
    job_dir = stage(LocalTransport(), str(tmp_path / "work"), spec, plan_tasks(4, 1), claim=True)
    marker = tmp_path / "requeued"
    proc = start_runner(job_dir, ["touch", str(marker)])
    wait_for_file(Path(job_dir, runner.claim_name(0)))
    proc.send_signal(signal.SIGUSR2)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == runner.REQUEUED_EXIT, stderr
    assert marker.exists()
    outcomes = read_outcomes(LocalTransport(), job_dir, 4)
    assert outcomes[0] is not None and outcomes[0].value == (0, "0")  # the running call finished
    assert outcomes[1:] == [None, None, None]  # nothing new was started


def test_a_failing_requeue_command_lets_the_task_carry_on(tmp_path: Path) -> None:
    spec = JobSpec(
        name="double", func=double_and_restarts, arguments=[((i, 0.3), {}) for i in range(2)], config=ClusterConfig({})
    )
    job_dir = stage(LocalTransport(), str(tmp_path / "work"), spec, plan_tasks(2, 1), claim=True)
    proc = start_runner(job_dir, ["false"])
    wait_for_file(Path(job_dir, runner.claim_name(0)))
    proc.send_signal(signal.SIGUSR2)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "requeue failed" in stderr
    assert [o.value for o in read_outcomes(LocalTransport(), job_dir, 2) if o] == [(0, "0"), (2, "0")]


def test_checkpoint_results_are_read_as_a_tuple_or_as_an_object_with_attributes() -> None:
    class Delayed:
        def __init__(self) -> None:
            self.function, self.args, self.kwargs = abs, [-3], {}

    assert runner.as_call((abs, (-2,), {})) == (abs, (-2,), {})
    assert runner.as_call(Delayed()) == (abs, (-3,), {})
    with pytest.raises(TypeError, match="function, args and kwargs"):
        runner.as_call(42)


# ---- on the real cluster -----------------------------------------------------


@pytest.fixture
def config(slurm_cluster: object, tmp_path: Path) -> Any:
    return slurm_config(str(tmp_path / "jobs"))


@pytest.fixture
def either_config(slurm_cluster: object, transport_options: dict[str, Any]) -> Any:
    """SLURM on the login node, or over SSH as clustrix-test (whose runner then requeues its own task)."""
    return resolve_config(overrides={"cluster_type": "slurm", "job_poll_interval": 0.2, **transport_options})


def submit(config: Any, func: Any, calls: list[tuple[Any, ...]], **resources: Any) -> Any:
    spec = JobSpec(
        name=getattr(func, "__name__", type(func).__name__),
        func=func,
        arguments=[(tuple(c), {}) for c in calls],
        resources=Resources.parse(**resources),
        config=config,
    )
    scheduler = get_scheduler("slurm")
    return scheduler, scheduler.submit(spec, wake=lambda: None)


@pytest.mark.testbed_slurm
def test_a_running_job_requeued_by_scontrol_still_delivers_its_result(either_config: Any, fresh_plugins: None) -> None:
    config = either_config
    scheduler, handle = submit(config, double_and_restarts, [(21, 3.0)])
    wait_for_state(scheduler, handle, config, "RUNNING", timeout=30)
    subprocess.run(["scontrol", "requeue", f"{handle.native_id}_0"], check=True, capture_output=True)
    status, _ = poll_until_final(scheduler, handle, config, timeout=90)
    assert status.state is JobState.COMPLETED, status
    [outcome] = scheduler.fetch(handle, config)
    assert outcome.value == (42, "1")  # the second run delivered it


@pytest.mark.testbed_slurm
def test_a_checkpointing_callable_signalled_with_usr2_resumes_from_its_checkpoint(
    either_config: Any, fresh_plugins: None
) -> None:
    config = either_config
    scheduler, handle = submit(config, CountTo(step_seconds=0.1), [(60,)])
    wait_for_state(scheduler, handle, config, "RUNNING", timeout=30)
    wait_for_file(Path(handle.job_dir, runner.claim_name(0)))
    time.sleep(1.5)
    subprocess.run(["scancel", "--batch", "--signal=USR2", f"{handle.native_id}_0"], check=True, capture_output=True)
    status, _ = poll_until_final(scheduler, handle, config, timeout=90)
    assert status.state is JobState.COMPLETED, status
    [outcome] = scheduler.fetch(handle, config)
    assert outcome.value["total"] == sum(range(60))
    assert 0 < outcome.value["resumed_from"] < 60
    assert outcome.value["restarts"] == "1"


def preempt_with_an_urgent_job(bed: SlurmTestbed) -> str:
    """Submit a job to the urgent partition that needs the whole node's memory, so SLURM must
    preempt what runs there (every other job holds at least DefMemPerCPU)."""
    argv = ["sbatch", "--parsable", f"--partition={bed.urgent_partition}", f"--mem={bed.real_memory_mb}M"]
    submitted = subprocess.run(
        [*argv, "--output=/dev/null", "--wrap=sleep 1"],
        check=True,
        capture_output=True,
        text=True,
    )
    return submitted.stdout.strip().split(";")[0]


def recorded_states(job_id: str) -> list[str]:
    """Every state accounting recorded for the job's runs (sacct --duplicates lists the requeued ones too)."""
    listed = subprocess.run(
        ["sacct", "--duplicates", "--noheader", "--parsable2", "--format=State", "-X", "-j", job_id],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]


@pytest.mark.testbed_slurm
def test_a_job_preempted_by_a_higher_tier_partition_runs_again_and_delivers_its_result(
    slurm_cluster: SlurmTestbed, config: Any, fresh_plugins: None
) -> None:
    """No time= so no --signal: the call runs on through GraceTime, is killed, and SLURM
    requeues the task, which runs the call again from the start."""
    scheduler, handle = submit(config, double_once_restarted, [(21,)])
    wait_for_state(scheduler, handle, config, "RUNNING", timeout=30)
    wait_for_file(Path(handle.job_dir, runner.claim_name(0)))
    urgent = preempt_with_an_urgent_job(slurm_cluster)
    status, _ = poll_until_final(scheduler, handle, config, timeout=120)
    assert status.state is JobState.COMPLETED, status
    [outcome] = scheduler.fetch(handle, config)
    assert outcome.value == (42, "1")  # the run after the preemption delivered it
    assert recorded_states(urgent) == ["COMPLETED"]
    if slurm_cluster.accounting:
        assert "PREEMPTED" in recorded_states(handle.native_id), recorded_states(handle.native_id)


@pytest.mark.testbed_slurm
def test_a_preempted_checkpointing_callable_gets_sigusr2_in_its_grace_time_and_resumes_from_its_checkpoint(
    slurm_cluster: SlurmTestbed, either_config: Any, fresh_plugins: None
) -> None:
    """With time= the job has --signal=B:USR2@60; the cluster sends it at preemption
    (preempt_send_user_signal), so checkpoint() runs before GraceTime is up."""
    config = either_config
    steps = 150  # 15 s of work, so the preemption (a second or three after the urgent job) lands mid-call
    scheduler, handle = submit(config, CountTo(step_seconds=0.1), [(steps,)], time="00:10:00")
    wait_for_state(scheduler, handle, config, "RUNNING", timeout=30)
    wait_for_file(Path(handle.job_dir, runner.claim_name(0)))
    time.sleep(1.0)
    urgent = preempt_with_an_urgent_job(slurm_cluster)
    status, _ = poll_until_final(scheduler, handle, config, timeout=120)
    assert status.state is JobState.COMPLETED, status
    [outcome] = scheduler.fetch(handle, config)
    assert outcome.value["total"] == sum(range(steps))
    assert 0 < outcome.value["resumed_from"] < steps  # it went on from where the preemption stopped it
    assert int(outcome.value["restarts"]) >= 1
    assert recorded_states(urgent) == ["COMPLETED"]


@pytest.mark.testbed_slurm
@pytest.mark.slow
def test_the_signal_before_the_time_limit_checkpoints_and_the_job_finishes_after_requeue(
    config: Any, fresh_plugins: None
) -> None:
    """time=1 min, signal_delay=52 s, a 45 s call: USR2 comes between 8 s and about 40 s in
    (slurmctld checks time limits every 30 s), so the call is checkpointed and finished by a requeued run."""
    scheduler, handle = submit(config, CountTo(step_seconds=0.75), [(60,)], time="00:01:00", signal_delay=52)
    status, _ = poll_until_final(scheduler, handle, config, timeout=240, interval=1)
    assert status.state is JobState.COMPLETED, status
    [outcome] = scheduler.fetch(handle, config)
    assert outcome.value["total"] == sum(range(60))
    assert outcome.value["resumed_from"] is not None
    assert int(outcome.value["restarts"]) >= 1


def test_requeued_and_held_states_keep_the_job_waiting() -> None:
    for word in ("REQUEUED", "RQ", "REQUEUE_HOLD", "PENDING"):
        assert to_job_state(word) is JobState.PENDING
    assert not to_job_state("PREEMPTED").final


def test_preempted_is_waited_on_and_reported_failed_only_if_never_requeued() -> None:
    scheduler = BatchScheduler(SlurmDialect())
    LIMIT = SlurmDialect.preempted_final_after
    preempted = JobStatus(state=JobState.PREEMPTED, reason="PREEMPTED")
    assert scheduler._settle_preempted("j", preempted, 100.0).state is JobState.PREEMPTED
    assert scheduler._settle_preempted("j", preempted, 100.0 + LIMIT - 1).state is JobState.PREEMPTED
    ended = scheduler._settle_preempted("j", preempted, 100.0 + LIMIT + 1)
    assert ended.state is JobState.FAILED
    assert "not requeued" in (ended.reason or "")
    requeued = JobStatus(state=JobState.PENDING, reason="BeginTime")
    assert scheduler._settle_preempted("k", preempted, 0.0).state is JobState.PREEMPTED
    assert scheduler._settle_preempted("k", requeued, 1000.0) is requeued
    assert scheduler._settle_preempted("k", preempted, 1001.0).state is JobState.PREEMPTED  # the clock restarts
