"""Parsers, the state table and the qacct failure classification, on output captured from the real testbed."""

from __future__ import annotations

import math

import pytest

from clustrix.errors import ParseError
from clustrix.plugin.types import JobState
from clustrix_sge import parse
from clustrix_sge.dialect import SGEDialect
from clustrix_sge.states import classify, to_job_state
from tests.sge.conftest import FIXTURES


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


JOBS = dict(line.split("=") for line in fixture("jobs.txt").split())
DIALECT = SGEDialect()


def by_job(records):
    grouped = {}
    for record in records:
        grouped.setdefault(record.job_id, []).append(record)
    return grouped


def only(records):
    assert len(records) == 1, records
    return records[0]


def test_qsub_terse_gives_the_job_id_of_a_job_and_of_an_array():
    assert parse.parse_qsub_terse(fixture("qsub_terse.txt")) == JOBS["completed"]
    assert fixture("qsub_terse_array.txt").strip() == f"{JOBS['array']}.1-6:1"
    assert parse.parse_qsub_terse(fixture("qsub_terse_array.txt")) == JOBS["array"]
    with pytest.raises(ParseError):
        parse.parse_qsub_terse(fixture("qsub_rejected_no_suitable_queue_stderr.txt"))
    with pytest.raises(ParseError):
        parse.parse_qsub_terse("")


def test_qstat_xml_gives_every_job_list_with_tasks_states_and_queues():
    jobs = by_job(parse.parse_qstat_xml(fixture("qstat_xml.txt")))
    array = jobs[JOBS["array"]]
    assert {job.tasks: job.state for job in array} == {(3,): "t", (4,): "t", (5, 6): "qw"}
    assert [(j.tasks, j.state) for j in jobs[JOBS["held_array"]]] == [((1, 2, 3, 4, 5), "hqw")]
    assert only(jobs[JOBS["cancelled"]]).state == "r"
    assert only(jobs[JOBS["cancelled"]]).queue == "all.q@vm"
    assert only(jobs[JOBS["cancelled"]]).tasks is None
    assert only(jobs[JOBS["suspended"]]).state == "s"
    assert only(jobs[JOBS["held"]]).state == "hqw"
    error = only(jobs[JOBS["error"]])
    assert error.state == "Eqw"
    assert error.reason is None  # plain qstat -xml has no reasons
    assert JOBS["completed"] not in jobs  # finished jobs leave qstat at once


def test_the_status_command_brings_the_reason_of_an_error_state_and_only_for_it():
    jobs = by_job(parse.parse_qstat_xml(fixture("status_command.txt")))
    error = only(jobs[JOBS["error"]])
    assert error.reason == "error: can't chdir to /nonexistent/clustrix: No such file or directory"
    assert all(job.reason is None for job_id, records in jobs.items() if job_id != JOBS["error"] for job in records)


def test_qstat_j_error_reasons_lose_their_timestamp_and_keep_their_task():
    assert parse.parse_qstat_j_errors(fixture("qstat_j_error.txt")) == {
        JOBS["error"]: {1: "error: can't chdir to /nonexistent/clustrix: No such file or directory"}
    }
    assert parse.parse_qstat_j_errors(fixture("qstat_j_unknown_stderr.txt")) == {}


def test_empty_qstat_output_means_no_open_jobs_and_garbage_is_an_error():
    assert parse.parse_qstat_xml("") == []
    with pytest.raises(ParseError, match="not XML"):
        parse.parse_qstat_xml("error: commlib error: got select error (Connection refused)")


def test_qacct_reads_failure_exit_status_memory_wallclock_and_the_category_limits():
    timeout = only(parse.parse_qacct(fixture("qacct_timeout.txt")))
    assert (timeout.job_id, timeout.task, timeout.failed, timeout.exit_status) == (JOBS["timeout"], None, 37, 137)
    assert timeout.failed_text == "qmaster enforced h_rt, h_cpu, or h_vmem limit"
    assert timeout.limits == {"h_rt": "3"}
    assert timeout.wallclock is not None and timeout.wallclock >= 3
    oom = only(parse.parse_qacct(fixture("qacct_oom.txt")))
    assert oom.limits == {"h_vmem": "200M"}
    assert oom.maxvmem is not None and oom.maxvmem > 200 * 1024**2
    pe = only(parse.parse_qacct(fixture("qacct_pe.txt")))
    assert (pe.queue, pe.project, pe.account, pe.granted_pe, pe.slots) == ("short.q", "clustrix", "acct42", "smp", 2)
    completed = only(parse.parse_qacct(fixture("qacct_completed.txt")))
    assert (completed.failed, completed.exit_status, completed.project, completed.granted_pe) == (0, 0, None, None)
    assert only(parse.parse_qacct(fixture("qacct_failed.txt"))).exit_status == 3


def test_qacct_of_an_array_has_one_record_per_task():
    records = parse.parse_qacct(fixture("qacct_array.txt"))
    assert sorted(r.task for r in records) == [1, 2, 3, 4, 5, 6]
    assert {r.job_id for r in records} == {JOBS["array"]}


def test_the_history_command_reads_several_jobs_and_skips_an_unknown_one():
    records = by_job(parse.parse_qacct(fixture("history_command.txt")))
    assert set(records) == {JOBS["timeout"], JOBS["oom"], JOBS["cancelled"], JOBS["array"]}
    assert "not found" in fixture("qacct_unknown_stderr.txt")
    assert parse.parse_qacct(fixture("qacct_unknown_stderr.txt").split("error:")[0]) == []


@pytest.mark.parametrize(
    ("name", "word", "state"),
    [
        ("completed", "COMPLETED", JobState.COMPLETED),
        ("failed", "FAILED", JobState.FAILED),
        ("timeout", "TIMEOUT", JobState.TIMEOUT),
        ("oom", "OUT_OF_MEMORY", JobState.OUT_OF_MEMORY),
        ("cancelled", "CANCELLED", JobState.CANCELLED),
        # a MemoryError inside the process (the rlimit refused an allocation) is the call's own error
        ("memoryerror", "FAILED", JobState.FAILED),
    ],
)
def test_qacct_records_are_classified_by_how_the_job_ended(name, word, state):
    record = only(parse.parse_qacct(fixture(f"qacct_{name}.txt")))
    got, reason = classify(record)
    assert got == word
    assert to_job_state(got) is state
    if state is not JobState.COMPLETED:
        assert reason is not None and f"failed {record.failed}" in reason


def test_a_limit_kill_is_told_apart_by_memory_peak_then_by_wall_clock():
    oom = only(parse.parse_qacct(fixture("qacct_oom.txt")))
    timeout = only(parse.parse_qacct(fixture("qacct_timeout.txt")))
    assert "h_vmem" in classify(oom)[1]
    assert "h_rt" in classify(timeout)[1]
    # the same kill with neither limit reached (an h_cpu limit, say) is a plain failure with SGE's words
    neither = parse.AccountingRecord(job_id="1", task=None, failed=37, failed_text="qmaster enforced", wallclock=1)
    assert classify(neither)[0] == "FAILED"
    # qdel of a -notify job: SIGUSR2 first, the runner checkpointed and exited with its requeue code
    deleted = parse.AccountingRecord(job_id="1", task=1, failed=0, exit_status=75)
    assert classify(deleted)[0] == "CANCELLED"
    rescheduled = parse.AccountingRecord(job_id="1", task=1, failed=25, failed_text="rescheduling", exit_status=0)
    assert to_job_state(classify(rescheduled)[0]) is JobState.PENDING


@pytest.mark.parametrize(
    ("code", "state"),
    [
        ("qw", JobState.PENDING),
        ("hqw", JobState.PENDING),
        ("hRwq", JobState.PENDING),
        ("Rq", JobState.PENDING),
        ("Eqw", JobState.PENDING),  # the engine asks never_runnable, which fails it
        ("r", JobState.RUNNING),
        ("t", JobState.RUNNING),
        ("Rr", JobState.RUNNING),
        ("s", JobState.RUNNING),
        ("S", JobState.RUNNING),
        ("T", JobState.RUNNING),
        ("dr", JobState.CANCELLED),  # qdel'd: it ends after the notify time, and never runs again
        ("dt", JobState.CANCELLED),
        ("dqw", JobState.CANCELLED),
        ("hr", JobState.RUNNING),
        ("Rs", JobState.RUNNING),
        ("", JobState.UNKNOWN),
        ("bogus state", JobState.UNKNOWN),
    ],
)
def test_qstat_states_map_onto_job_states(code, state):
    assert to_job_state(code) is state


def test_error_state_is_never_runnable_with_its_reason_and_other_states_are_not():
    records = DIALECT.parse_status(fixture("status_command.txt"))
    error = only([r for r in records if r.job_id == JOBS["error"]])
    assert DIALECT.never_runnable(error) == (
        "Eqw (error: can't chdir to /nonexistent/clustrix: No such file or directory)"
    )
    assert all(DIALECT.never_runnable(r) is None for r in records if r.job_id != JOBS["error"])
    held = only([r for r in records if r.job_id == JOBS["held"]])
    assert held.reason is not None and "held" in held.reason
    suspended = only([r for r in records if r.job_id == JOBS["suspended"]])
    assert suspended.reason is not None and "suspended" in suspended.reason


def test_history_records_carry_native_tasks_and_exit_codes():
    records = by_job(DIALECT.parse_history(fixture("history_command.txt")))
    assert sorted(t for r in records[JOBS["array"]] for t in r.tasks) == [1, 2, 3, 4, 5, 6]
    timeout = only(records[JOBS["timeout"]])
    assert (timeout.tasks, timeout.state, timeout.exit_code) == (None, "TIMEOUT", 137)
    assert only(records[JOBS["oom"]]).state == "OUT_OF_MEMORY"
    assert only(records[JOBS["cancelled"]]).state == "CANCELLED"


def test_qconf_gives_max_aj_tasks_with_continued_lines_and_zero_meaning_unlimited():
    values = parse.parse_qconf(fixture("qconf_sconf.txt"))
    assert values["max_aj_tasks"] == "75000"
    assert values["reporting_params"].startswith("accounting=true reporting=false")
    assert "accounting_flush_time=00:00:00" in values["reporting_params"]  # the continued line
    assert DIALECT.parse_site(fixture("qconf_sconf.txt")).max_array_size == 75000
    assert parse.max_aj_tasks({"max_aj_tasks": "0"}, 100) == parse.UNLIMITED_TASKS
    assert parse.max_aj_tasks({"max_aj_tasks": "5000"}, 100) == 5000
    assert parse.max_aj_tasks({}, 100) == 100


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("200M", 200 * 1024**2),
        ("271.191MB", math.ceil(271.191 * 1024**2)),
        ("4.457KB", 4564),
        ("1G", 1024**3),
        ("0.000B", 0),
        ("x", None),
    ],
)
def test_grid_engine_memory_values_are_1024_based(text, expected):
    assert parse.memory_bytes(text) == expected


@pytest.mark.parametrize(("text", "expected"), [("3", 3), ("0:0:3", 3), ("01:00:00", 3600), ("18s", 18), ("1:x", None)])
def test_grid_engine_times_are_seconds_or_h_m_s(text, expected):
    assert parse.seconds(text) == expected
