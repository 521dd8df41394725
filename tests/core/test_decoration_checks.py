"""What ``@cluster(...)`` refuses when the function is decorated, before anything runs (issue 19, rows 10-12, 14)."""

from __future__ import annotations

from typing import Any

import pytest

import clustrix
from clustrix import cluster
from clustrix.config.resources import Resources, parse_memory
from clustrix.errors import SchedulerNotFoundError

# ---- memory: an int is bytes, and a small one is a forgotten unit --------------------------------


@pytest.mark.parametrize("value", [1, 512, 1024, 4096, 1024**2 - 1])
def test_an_int_memory_below_one_mebibyte_is_refused_with_the_unit_to_write(value: int) -> None:
    with pytest.raises(ValueError, match=rf"memory={value} is {value} bytes .*less than 1 MiB.*memory='{value}MB'"):

        @cluster(memory=value)
        def f() -> None: ...


def test_an_int_memory_of_one_mebibyte_or_more_is_taken_as_bytes() -> None:
    assert parse_memory(1024**2) == 1024**2
    assert cluster(memory=8 * 1024**3)(lambda: None).resources.memory == 8 * 1024**3


def test_a_configured_default_memory_int_is_checked_the_same_way() -> None:
    with pytest.raises(ValueError, match=r"default_memory=1024 is 1024 bytes.*default_memory='1024MB'"):
        clustrix.configure(default_memory=1024)


# ---- partition and queue: one setting under two names --------------------------------------------


def test_a_partition_and_a_queue_that_disagree_are_refused_at_decoration() -> None:
    with pytest.raises(ValueError, match=r"partition='a' and queue='b' disagree: .*give one of them"):

        @cluster(partition="a", queue="b")
        def f() -> None: ...


def test_the_same_name_as_partition_and_queue_is_accepted() -> None:
    assert cluster(partition="a", queue="a")(lambda: None).resources.queue == "a"


def test_a_function_queue_replaces_a_configured_default_partition_instead_of_clashing_with_it() -> None:
    configured = Resources.parse(partition="debug", cores=2, parameter_prefix="default_")
    merged = Resources.parse(queue="long").with_defaults(configured)
    assert (merged.partition, merged.queue, merged.cores) == (None, "long", 2)
    merged = Resources.parse(partition="gpu").with_defaults(Resources.parse(queue="all.q"))
    assert (merged.partition, merged.queue) == ("gpu", None)


# ---- keywords from other tools name the clustrix keyword ----------------------------------------

#: (keyword another tool uses, value, what the message must suggest): independent of the code's table.
ALIASES: list[tuple[str, Any, str]] = [
    ("ncpus", 4, "cores=4"),  # PBS
    ("cpus_per_task", 4, "cores=4"),  # SLURM, submitit
    ("cpus", 4, "cores=4"),
    ("num_cpus", 4, "cores=4"),  # Ray
    ("nodes", 2, "cores=N (each call runs on one node)"),  # SLURM, submitit
    ("mem", "4G", "memory='4G'"),  # SLURM
    ("mem_gb", 16, "memory='16GB'"),  # submitit
    ("walltime", "01:00:00", "time='01:00:00'"),  # PBS, dask-jobqueue
    ("time_limit", "01:00:00", "time='01:00:00'"),
    ("timeout_min", 90, "time=90"),  # submitit
    ("timeout", 90, "time=90"),
    ("queue_name", "long", "queue='long'"),
    ("slurm_partition", "gpu", "partition='gpu'"),  # submitit
    ("gpus_per_node", 2, "gpus=2"),  # submitit
    ("ngpus", 2, "gpus=2"),  # PBS
    ("n_workers", 8, "max_parallel_jobs=8"),  # dask-jobqueue
    ("slurm_array_parallelism", 8, "max_parallel_jobs=8"),  # submitit
    ("parallel", True, "f.map(items)"),  # the original clustrix 0.1.x
    ("environment", "myenv", "environment_variables="),  # the original clustrix 0.1.x
    ("environment", "myenv", "conda_env_name="),
    ("env", {"A": "1"}, "environment_variables="),
    ("conda_env", "myenv", "conda_env_name='myenv'"),
    ("modules", ["gcc"], "module_loads="),
    ("job_script_prologue", ["source x"], "pre_execution_commands="),  # dask-jobqueue
    ("host", "hpc", "cluster_host='hpc'"),
]


@pytest.mark.parametrize(("alias", "value", "meant"), ALIASES, ids=[f"{a}-{m}" for a, _, m in ALIASES])
def test_a_keyword_of_another_tool_is_refused_naming_the_clustrix_keyword(alias: str, value: Any, meant: str) -> None:
    with pytest.raises(ValueError, match=rf"unknown keyword {alias}=.*: for clustrix, write ") as caught:
        cluster(**{alias: value})
    message = str(caught.value)
    assert meant in message, message
    assert "did you mean" not in message, message  # no spelling guess on top (ncpus is not a misspelt gpus)


# ---- cluster_type -------------------------------------------------------------------------------


def test_a_misspelt_cluster_type_is_refused_at_decoration_with_a_suggestion() -> None:
    with pytest.raises(SchedulerNotFoundError, match=r"cluster_type='slurmm'.*did you mean 'slurm'\?"):

        @cluster(cluster_type="slurmm")
        def f() -> None: ...

    with pytest.raises(SchedulerNotFoundError, match=r"cluster_type='slurmm'"):
        clustrix.Executor(cluster_type="slurmm")


def test_a_known_scheduler_name_passes_decoration_even_before_its_plugin_is_installed() -> None:
    f = cluster(cluster_type="slurm", cores=2)(lambda: None)
    assert f.config_overrides == {"cluster_type": "slurm"}
