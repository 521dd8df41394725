"""Parsers and the state table, on output captured from the real testbed (tests/slurm/fixtures)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from clustrix.batch.status import job_status as engine_job_status
from clustrix.errors import ParseError
from clustrix.plugin.types import JobState
from clustrix_slurm import parse
from clustrix_slurm.dialect import SlurmDialect, to_job_state
from clustrix_slurm.states import NATIVE_STATES, never_runnable
from tests.slurm.conftest import FIXTURES

DIALECT = SlurmDialect()


def job_status(records, n_tasks, exits):
    return engine_job_status(DIALECT, records, n_tasks, exits)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


JOBS = dict(line.split("=") for line in fixture("jobs.txt").split())


def by_job(records):
    grouped = {}
    for record in records:
        grouped.setdefault(record.job_id, []).append(record)
    return grouped


def test_sbatch_parsable_gives_the_job_id_with_or_without_a_cluster_name():
    assert parse.parse_sbatch_parsable(fixture("sbatch_parsable.txt")) == JOBS["completed"]
    assert parse.parse_sbatch_parsable("4242;clustrix\n") == "4242"
    with pytest.raises(ParseError):
        parse.parse_sbatch_parsable("sbatch: error: nope")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5", (5,)), ("[2-5%2]", (2, 3, 4, 5)), ("4-6%2", (4, 5, 6)), ("[1,3,5-7]", (1, 3, 5, 6, 7))],
)
def test_array_task_ranges_expand(text, expected):
    assert parse.expand_task_ids(text) == expected


def test_sacct_job_ids_split_into_job_and_tasks():
    assert parse.split_job_id("123") == ("123", None)
    assert parse.split_job_id("123_4") == ("123", (4,))
    assert parse.split_job_id("123_[5-9%2]") == ("123", (5, 6, 7, 8, 9))


def test_squeue_of_running_jobs_shows_pending_array_ranges_and_reasons():
    records = by_job(parse.parse_squeue(fixture("squeue_running.txt")))
    array = records[JOBS["array"]]
    pending = [r for r in array if r.state == "PENDING"]
    assert pending[0].tasks == tuple(range(4, 20))
    assert pending[0].reason == "JobArrayTaskLimit"
    assert records[JOBS["never"]][0].reason == "PartitionTimeLimit"
    assert records[JOBS["oom"]][0].state == "OUT_OF_MEMORY"
    assert records[JOBS["completed"]][0].tasks is None


def test_sacct_skips_steps_and_reads_exit_codes_and_signals():
    records = by_job(parse.parse_sacct(fixture("sacct_final.txt")))
    assert records[JOBS["failed"]][0].exit_code == 3
    assert records[JOBS["oom"]][0].exit_code == 128 + 125
    assert records[JOBS["cancelled"]][0].state == "CANCELLED by 0"
    assert sorted(t for r in records[JOBS["array"]] for t in r.tasks) == list(range(20))
    assert parse.parse_sacct("7.batch|FAILED|1:0|None\n7.extern|COMPLETED|0:0|None\n") == []


def test_scontrol_config_gives_max_array_size_and_accounting():
    config = parse.parse_scontrol_config(fixture("scontrol_show_config.txt"))
    assert parse.max_array_size(config) == 10001
    assert parse.accounting_enabled(config)
    site = DIALECT.parse_site(fixture("scontrol_show_config.txt"))
    assert (site.max_array_size, site.history) == (10001, True)
    assert not parse.accounting_enabled({"AccountingStorageType": "accounting_storage/none"})
    assert parse.max_array_size({}) == 1001


@pytest.mark.parametrize(
    ("native", "state"),
    [
        ("PENDING", JobState.PENDING),
        ("CONFIGURING", JobState.PENDING),
        ("REQUEUED", JobState.PENDING),
        ("RUNNING", JobState.RUNNING),
        ("COMPLETING", JobState.RUNNING),
        ("SUSPENDED", JobState.RUNNING),
        ("COMPLETED", JobState.COMPLETED),
        ("FAILED", JobState.FAILED),
        ("TIMEOUT", JobState.TIMEOUT),
        ("DEADLINE", JobState.TIMEOUT),
        ("OUT_OF_MEMORY", JobState.OUT_OF_MEMORY),
        ("CANCELLED", JobState.CANCELLED),
        ("CANCELLED by 0", JobState.CANCELLED),
        ("CANCELLED+", JobState.CANCELLED),
        ("NODE_FAIL", JobState.NODE_FAIL),
        ("BOOT_FAIL", JobState.NODE_FAIL),
        ("PREEMPTED", JobState.PREEMPTED),
        ("SOMETHING_NEW", JobState.UNKNOWN),
    ],
)
def test_native_states_map_to_core_states(native, state):
    assert to_job_state(native) is state


def test_every_native_state_maps_to_a_core_state():
    assert all(isinstance(state, JobState) for state in NATIVE_STATES.values())


def test_pending_reasons_that_can_never_clear_are_recognised():
    assert never_runnable("PartitionTimeLimit")
    assert never_runnable("BadConstraints")
    assert not never_runnable("Resources")
    assert not never_runnable("JobArrayTaskLimit")
    assert not never_runnable("ReqNodeNotAvail, UnavailableNodes:vm")
    assert not never_runnable(None)


def status_of(name: str, text: str, exits=None, tasks: int = 1):
    records = by_job(parse.parse_squeue(text) if "|N/A|" in text else parse.parse_sacct(text))
    return job_status(records[JOBS[name]], tasks, exits or {})


def test_final_squeue_states_become_job_statuses_with_slurm_reasons():
    final = fixture("squeue_final.txt")
    assert status_of("timeout", final).state is JobState.TIMEOUT
    assert "TimeLimit" in status_of("timeout", final).reason
    assert status_of("oom", final).state is JobState.OUT_OF_MEMORY
    assert status_of("cancelled", final).state is JobState.CANCELLED
    assert status_of("failed", final).state is JobState.FAILED
    assert status_of("array", final, tasks=20).state is JobState.COMPLETED


def test_a_job_pending_for_a_reason_that_never_clears_is_failed_at_once():
    status = status_of("never", fixture("squeue_running.txt"))
    assert status.state is JobState.FAILED
    assert "PartitionTimeLimit" in status.reason and "MaxTime" in status.reason
    assert status.reason.startswith("SLURM will never start this job")


def test_an_array_with_tasks_pending_behind_its_throttle_is_running():
    status = status_of("array", fixture("squeue_running.txt"), tasks=20)
    assert status.state is JobState.RUNNING


def test_exit_code_files_win_over_what_slurm_says():
    status = status_of("timeout", fixture("squeue_final.txt"), exits={0: 0})
    assert status.state is JobState.COMPLETED
    status = status_of("failed", fixture("squeue_final.txt"), exits={0: 1})
    assert status.state is JobState.FAILED and status.exit_code == 1


def test_an_array_reports_its_worst_task_by_number():
    records = parse.parse_sacct("9_0|COMPLETED|0:0|None\n9_1|OUT_OF_MEMORY|0:125|None\n9_2|CANCELLED by 0|0:0|None\n")
    status = job_status(records, 3, {0: 0})
    assert status.state is JobState.OUT_OF_MEMORY
    assert status.reason.startswith("array task 1: OUT_OF_MEMORY")


def test_tasks_missing_from_the_answer_make_the_status_unknown_when_the_rest_is_final():
    records = parse.parse_sacct("9_0|COMPLETED|0:0|None\n")
    assert job_status(records, 2, {}) is None
    records = parse.parse_squeue("9|0|RUNNING|None\n")
    assert job_status(records, 2, {}).state is JobState.RUNNING


@pytest.mark.parametrize(
    ("listing", "waited"),
    [
        ("(null)\nafterok:17_*(unfulfilled)\n", False),  # another job's number that ends in 7
        ("afterok:70_*(unfulfilled)\n", False),  # or starts with it
        ("afterok:7_*(unfulfilled)\n", True),
        ("afterok:5_*(unfulfilled),aftercorr:7_*(unfulfilled)\n", True),  # held for two jobs
        ("afterok:7(unfulfilled)\n", True),
        ("", False),  # no pending job at all
    ],
)
def test_a_pending_job_naming_the_array_in_its_dependencies_keeps_its_tasks_from_being_swept(
    tmp_path: Path, listing: str, waited: bool
) -> None:
    squeue = tmp_path / "squeue"
    squeue.write_text(f"#!/bin/sh\nprintf '%s' {shlex.quote(listing)}\n")
    squeue.chmod(0o755)
    check = SlurmDialect().unwaited_check("7", shlex.join)
    line = f"if {check}; then echo unwaited; fi"
    done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert done.stdout == ("" if waited else "unwaited\n"), done.stderr


def test_an_array_is_not_swept_when_squeue_cannot_say_who_waits_for_it(tmp_path: Path) -> None:
    squeue = tmp_path / "squeue"
    squeue.write_text("#!/bin/sh\necho 'slurm_load_jobs error: Socket timed out' >&2\nexit 1\n")
    squeue.chmod(0o755)
    line = f"if {SlurmDialect().unwaited_check('7', shlex.join)}; then echo unwaited; fi"
    done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert done.stdout == ""
