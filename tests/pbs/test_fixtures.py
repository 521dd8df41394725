"""The dialects on output captured from this project's testbeds (``python -m tests.pbs.capture_fixtures``).

OpenPBS 23.06 in its namespace, and the Torque-style CLI of slurm-wlm-torque (SLURM
underneath: where it is not Torque, the test says so).
"""

from __future__ import annotations

from pathlib import Path

from clustrix.plugin.types import JobState
from clustrix_pbs import parse
from clustrix_pbs.dialect import PBSProDialect, TorqueDialect

FIXTURES = Path(__file__).parent / "fixtures"
PBSPRO, TORQUE = PBSProDialect(), TorqueDialect()


def text(name: str) -> str:
    return (FIXTURES / name).read_text()


def stderr(name: str) -> str:
    """A captured stderr without the ``(exit N)`` line the capture script adds."""
    return "".join(line for line in text(name).splitlines(keepends=True) if not line.startswith("(exit "))


def ids(name: str) -> dict[str, str]:
    return dict(line.split() for line in text(name).splitlines())


def states_of(name: str, dialect: PBSProDialect | TorqueDialect) -> dict[tuple[str, int | None], JobState]:
    return {
        (r.job_id, r.tasks[0] if r.tasks else None): dialect.to_job_state(r) for r in dialect.parse_status(text(name))
    }


def test_openpbs_status_query_lists_every_job_while_they_run_and_queue() -> None:
    job = ids("openpbs_qsub_ids.txt")
    found = states_of("openpbs_status_mixed.stdout", PBSPRO)
    assert found[(job["ok"], None)] is JobState.COMPLETED
    assert found[(job["exit3"], None)] is JobState.FAILED
    assert found[(job["walltime"], None)] is JobState.TIMEOUT
    assert found[(job["never"], None)] is JobState.PENDING
    assert found[(job["running"], None)] is JobState.RUNNING
    assert {task for (native, task) in found if native == job["array"]} == {1, 2, 3, 4}


def test_openpbs_can_never_run_comment_is_read_from_the_status_query() -> None:
    job = ids("openpbs_qsub_ids.txt")
    (record,) = [r for r in PBSPRO.parse_status(text("openpbs_status_mixed.stdout")) if r.job_id == job["never"]]
    reason = PBSPRO.never_runnable(record)
    assert reason is not None and reason.startswith("Can Never Run: Insufficient amount of resource: ncpus")


def test_openpbs_final_states_after_qdel_and_the_walltime_kill() -> None:
    job = ids("openpbs_qsub_ids.txt")
    found = states_of("openpbs_status_final.stdout", PBSPRO)
    assert found[(job["running"], None)] is JobState.CANCELLED  # qdel of a running job: 271
    assert found[(job["never"], None)] is JobState.CANCELLED  # deleted while queued: no Exit_status
    assert found[(job["walltime"], None)] is JobState.TIMEOUT
    records = {r.job_id: r for r in PBSPRO.parse_status(text("openpbs_status_final.stdout")) if r.tasks is None}
    assert records[job["running"]].exit_code == 271


def test_openpbs_unknown_job_in_the_query_leaves_the_known_ones_readable() -> None:
    job = ids("openpbs_qsub_ids.txt")
    assert PBSPRO.status_failure_means_unknown(153, stderr("openpbs_status_unknown_and_known.stderr"))
    assert [r.job_id for r in PBSPRO.parse_status(text("openpbs_status_unknown_and_known.stdout"))] == [job["ok"]]


def test_openpbs_json_prints_only_the_first_of_several_jobs_so_the_status_query_uses_text() -> None:
    job = ids("openpbs_qsub_ids.txt")
    records = parse.parse_qstat_json(text("openpbs_qstat_json_two_jobs.stdout"))
    assert [r.job_id for r in records] == [job["ok"]]  # exit3 was asked for too
    assert "-F" not in PBSPRO.status_argv([job["ok"], job["exit3"]])
    array = parse.parse_qstat_json(text("openpbs_qstat_json_array.stdout"))
    assert sorted(r.array_index for r in array if r.array_index) == [1, 2, 3, 4]


def test_openpbs_errors_captured_on_the_testbed_are_classified() -> None:
    assert parse.classify_errors(text("openpbs_qdel_finished.stderr"))[0].kind is parse.ErrorKind.FINISHED
    assert parse.classify_errors(text("openpbs_qrerun_as_user.stderr"))[0].kind is parse.ErrorKind.UNAUTHORIZED
    assert parse.classify_errors(text("openpbs_qsub_unknown_queue.stderr"))[0].kind is parse.ErrorKind.UNKNOWN_QUEUE
    # PBS Pro refuses a one-element array: a single call is a plain job
    assert "illegal -J value" in text("openpbs_qsub_one_element_array.stderr")


def test_openpbs_version_and_server_attributes() -> None:
    assert parse.detect_flavour(text("openpbs_qstat_version.stdout")) is parse.Flavour.PBSPRO
    assert parse.pbs_version(text("openpbs_qstat_version.stdout")) == "23.06.06"
    assert PBSPRO.parse_site(text("openpbs_qstat_Bf.stdout")).max_array_size == 2000


def test_torque_style_cli_is_detected_as_torque_from_its_usage_text() -> None:
    # not Torque: SLURM's wrapper has no --version and prints its usage (exit 2)
    output = text("torque_cli_qstat_version.stdout") + text("torque_cli_qstat_version.stderr")
    assert parse.detect_flavour(output) is parse.Flavour.TORQUE


def test_torque_style_qstat_f_with_tab_indented_attributes_parses() -> None:
    job = ids("torque_cli_qsub_ids.txt")
    running = states_of("torque_cli_status_running.stdout", TORQUE)
    assert running == {(job["ok"], None): JobState.RUNNING, (job["array"], None): JobState.RUNNING}
    # not Torque: the wrapper shows an array as one line with its base id, and C without exit_status
    final = states_of("torque_cli_status_final.stdout", TORQUE)
    assert final == {(job["ok"], None): JobState.COMPLETED, (job["array"], None): JobState.COMPLETED}
    (record,) = [r for r in parse.parse_qstat_full(text("torque_cli_status_final.stdout")) if r.job_id == job["ok"]]
    assert record.attributes["Resource_List.ncpus"] == "1"


def test_torque_style_qstat_of_an_unknown_job_exits_153_without_a_word() -> None:
    assert text("torque_cli_status_unknown.stdout") == ""
    assert "(exit 153)" in text("torque_cli_status_unknown.stderr")
    assert TORQUE.status_failure_means_unknown(153, "")
