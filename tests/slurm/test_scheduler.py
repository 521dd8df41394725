"""The SLURM scheduler against the real testbed cluster, driven through its hooks (local transport)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from clustrix.batch.engine import BatchScheduler
from clustrix.config.resources import Resources
from clustrix.errors import EnvironmentBuildError, SubmitRejectedError
from clustrix.plugin.manager import get_scheduler
from clustrix.plugin.types import JobSpec, JobState
from clustrix_slurm import SlurmDialect
from tests.slurm.helpers import CountingTransport, Direct, poll_until_final, slurm_config, wait_for_state

pytestmark = pytest.mark.testbed_slurm


@pytest.fixture
def config(slurm_cluster, tmp_path):
    return slurm_config(str(tmp_path / "jobs"))


@pytest.fixture
def scheduler(slurm_cluster, fresh_plugins):
    return get_scheduler("slurm")


def spec(func, calls, config, **resources):
    return JobSpec(
        name=getattr(func, "__name__", "job"),
        func=func,
        arguments=[(tuple(args), {}) for args in calls],
        resources=Resources.parse(**resources),
        config=config,
    )


def double(x):
    return 2 * x


def fail_on_three(x):
    if x == 3:
        raise ValueError(f"bad value {x}")
    return x


def test_a_map_of_100_calls_is_one_sbatch_one_command_per_poll_round_and_a_fetch_without_commands(
    slurm_cluster, config, fresh_plugins
):
    transport = CountingTransport()
    scheduler = Direct(BatchScheduler(SlurmDialect(), transport_factory=lambda _config: transport))
    handle = scheduler.submit(spec(double, [(i,) for i in range(100)], config), wake=lambda: None)
    # the scheduler's commands and the environment checked (once per connection), then stage + sbatch
    assert len(transport.commands) <= 3
    assert sum("sbatch --parsable" in command for command in transport.commands) == 1
    first = len(transport.commands)
    scheduler.submit(spec(double, [(1,)], config), wake=lambda: None)
    assert len(transport.commands) == first + 1  # a second submit: one command, stage + sbatch
    assert handle.data["tasks"] == 100
    before = len(transport.commands)
    status, rounds = poll_until_final(scheduler, handle, config, timeout=120)
    assert status.state is JobState.COMPLETED
    assert len(transport.commands) - before == rounds  # files, squeue (and the sweep) in one command per round
    assert transport.mentioning("sacct") == 0
    before = len(transport.commands)
    outcomes = scheduler.fetch(handle, config)
    assert [o.value for o in outcomes] == [2 * i for i in range(100)]
    assert len(transport.commands) == before  # the last poll brought the outcomes inline


def test_calls_per_task_packs_many_calls_into_each_array_task(scheduler, config):
    handle = scheduler.submit(spec(double, [(i,) for i in range(50)], config, calls_per_task=10), wake=lambda: None)
    assert handle.data["tasks"] == 5
    status, _ = poll_until_final(scheduler, handle, config, timeout=60)
    assert status.state is JobState.COMPLETED
    assert [o.value for o in scheduler.fetch(handle, config)] == [2 * i for i in range(50)]


def test_an_array_with_one_failing_call_keeps_the_other_results(scheduler, config):
    handle = scheduler.submit(
        spec(fail_on_three, [(i,) for i in range(6)], config, calls_per_task=2), wake=lambda: None
    )
    status, _ = poll_until_final(scheduler, handle, config, timeout=60)
    assert status.state is JobState.FAILED
    outcomes = scheduler.fetch(handle, config)
    assert [o.ok for o in outcomes] == [True, True, True, False, True, True]
    assert isinstance(outcomes[3].exception, ValueError)


def test_memory_beyond_any_node_is_refused_at_submit_with_slurms_message(scheduler, config, slurm_cluster):
    too_much = f"{slurm_cluster.real_memory_mb * 4}M"
    with pytest.raises(SubmitRejectedError, match="Requested node configuration is not available") as info:
        scheduler.submit(spec(double, [(1,)], config, memory=too_much), wake=lambda: None)
    assert isinstance(info.value, ValueError)


def test_a_time_beyond_the_partition_limit_fails_fast_and_leaves_the_queue(scheduler, config, slurm_cluster):
    job = spec(double, [(1,)], config, partition=slurm_cluster.short_partition, time="02:00:00")
    handle = scheduler.submit(job, wake=lambda: None)
    started = time.monotonic()
    status, _ = poll_until_final(scheduler, handle, config, timeout=30)
    assert time.monotonic() - started < 10
    assert status.state is JobState.FAILED
    assert re.search("Partition(TimeLimit|Config)", status.reason)
    later = wait_for_state(scheduler, handle, config, "FAILED", timeout=5)
    assert later.state is JobState.FAILED

    queue = subprocess.run(
        ["squeue", "--noheader", "--jobs", handle.native_id, "--format=%T"], capture_output=True, text=True
    )
    assert "PENDING" not in queue.stdout


def test_unknown_resource_options_are_refused_before_anything_is_submitted(scheduler, config):
    with pytest.raises(ValueError, match="'acount'"):
        scheduler.submit(spec(double, [(1,)], config, acount="proj"), wake=lambda: None)


def test_a_python_with_cloudpickle_alone_runs_jobs_and_one_without_it_is_refused_before_submit(
    scheduler, tmp_path, fresh_plugins
):
    """The batch script runs the runner file shipped with the job, so clustrix need not be
    installed in python_executable; cloudpickle must be, and its absence is caught up front."""
    import cloudpickle

    site = tmp_path / "site"
    shutil.copytree(Path(cloudpickle.__file__).parent, site / "cloudpickle")
    with_cloudpickle = tmp_path / "python-with-cloudpickle-only"
    with_cloudpickle.write_text(f'#!/bin/sh\nPYTHONPATH={shlex.quote(str(site))} exec /usr/bin/python3 "$@"\n')
    with_cloudpickle.chmod(0o755)
    assert subprocess.run([with_cloudpickle, "-c", "import clustrix"], capture_output=True).returncode != 0

    config = slurm_config(str(tmp_path / "jobs"), python_executable=str(with_cloudpickle))
    handle = scheduler.submit(spec(double, [(21,)], config), wake=lambda: None)
    status, _ = poll_until_final(scheduler, handle, config, timeout=60)
    assert status.state is JobState.COMPLETED, status
    assert [o.value for o in scheduler.fetch(handle, config)] == [42]

    bare = slurm_config(str(tmp_path / "bare-jobs"), python_executable="/usr/bin/python3")
    with pytest.raises(EnvironmentBuildError, match="No module named 'cloudpickle'"):
        scheduler.submit(spec(double, [(21,)], bare), wake=lambda: None)
    assert not (tmp_path / "bare-jobs").exists()  # refused before anything was staged
