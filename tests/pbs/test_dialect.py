"""The PBS dialects are pure: scripts against golden files, argv, states and parsers on captured output.

Set ``CLUSTRIX_UPDATE_GOLDEN=1`` to rewrite the golden files after an intended change.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clustrix.batch.dialect import ScriptJob, TaskRecord
from clustrix.config.resources import Resources
from clustrix.errors import ParseError
from clustrix.plugin.types import JobState
from clustrix_pbs import directives, parse, states
from clustrix_pbs.dialect import PBSProDialect, TorqueDialect, native_job_id
from clustrix_pbs.parse import Flavour
from tests import golden
from tests.resource_forms import PBS_WALLTIME, TIME_FORMS, TimeForm

GOLDEN = Path(__file__).parent / "golden"
FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = Path(__file__).parent / "samples" / "openpbs-23.06-testbed"
PBSPRO, TORQUE = PBSProDialect(), TorqueDialect()


def job(n_tasks: int = 1, resources: Resources | None = None, **kw: object) -> ScriptJob:
    fields: dict[str, object] = {
        "job_id": "20260101-000000-abcdefabcdef",
        "name": "analyze genome/sequence",
        "job_dir": "/home/u/.clustrix/20260101-000000-abcdefabcdef",
        "n_tasks": n_tasks,
        "n_calls": max(n_tasks, 1),
        "resources": resources or Resources.parse(),
        "python": "/usr/bin/python3",
        "runner_path": "/home/u/.clustrix/20260101-000000-abcdefabcdef/clustrix_runner.py",
        **kw,
    }
    return ScriptJob(**fields)  # type: ignore[arg-type]


def check_golden(name: str, text: str) -> None:
    golden.check_golden(GOLDEN, name, text)


EVERY_OPTION = Resources.parse(
    cores=4,
    memory="3GB",
    time="02:30:00",
    queue="long",
    gpus=1,
    account="proj-42",
    pbs_w=["group_list=genomics", "sandbox=PRIVATE"],
    pbs_directives=["-m abe", "-M me@example.org"],
    job_name="genome run",
)


def test_pbspro_single_call_is_a_plain_job_matching_the_golden_file() -> None:
    script = PBSPRO.render_script(job(1, Resources.parse(cores=2, memory="500MB", time="00:10:00")))
    check_golden("pbspro_single_call.pbs", script)
    assert "-J" not in script
    assert '"$(( ${PBS_ARRAY_INDEX:-1} - 1 ))"' in script


def test_pbspro_array_with_every_option_matches_the_golden_file() -> None:
    script = PBSPRO.render_script(
        job(100, EVERY_OPTION, n_calls=250, max_parallel=10, prelude=("module load python/3.11", "export A='b c'"))
    )
    check_golden("pbspro_array_all_options.pbs", script)
    assert "#PBS -J 1-100%10" in script
    assert "#PBS -l select=1:ncpus=4:mem=2862mb:ngpus=1" in script


def test_torque_array_with_every_option_matches_the_golden_file() -> None:
    resources = Resources.parse(
        **{**EVERY_OPTION.extra, "cores": 4, "memory": "3GB", "time": "02:30:00", "queue": "long", "gpus": 1}
    )
    script = TORQUE.render_script(job(100, resources, n_calls=100))
    check_golden("torque_array_all_options.pbs", script)
    assert "#PBS -t 1-100" in script
    assert "#PBS -l nodes=1:ppn=4:gpus=1" in script and "#PBS -l mem=2862mb" in script
    assert "PBS_ARRAYID" in script and "PBS_ARRAY_INDEX" not in script


def test_torque_single_call_is_a_plain_job_matching_the_golden_file() -> None:
    script = TORQUE.render_script(job(1, Resources.parse(cores=1, rerunnable=False)))
    check_golden("torque_single_call.pbs", script)
    assert "-t " not in script and "#PBS -r n" in script


def test_output_and_error_paths_are_on_the_qsub_command_line() -> None:
    array = job(5)
    assert PBSPRO.submit_argv("/d/job.pbs", array) == [
        "qsub",
        "-f",  # in the foreground: no background qsub process left behind
        "-o",
        f"{array.job_dir}/pbs-^array_index^.out",
        "-e",
        f"{array.job_dir}/pbs-^array_index^.err",
        "/d/job.pbs",
    ]
    assert PBSPRO.submit_argv("/d/job.pbs", job(1))[3].endswith("/pbs-1.out")
    assert TORQUE.submit_argv("/d/job.pbs", array)[1:5] == [
        "-o",
        f"{array.job_dir}/pbs-scheduler.out",
        "-e",
        f"{array.job_dir}/pbs-scheduler.err",
    ]
    assert not any(line.startswith(("#PBS -o", "#PBS -e")) for line in PBSPRO.render_script(array).splitlines())


def test_cancel_waits_until_pbs_has_finished_the_deleted_job() -> None:
    argv = PBSPRO.cancel_argv("7[].vm")
    assert argv[:2] == ["sh", "-c"] and argv[3:5] == ["qdel", "7[].vm"]
    assert 'qdel "$1"' in argv[2] and "job_state = [FX]" in argv[2]
    assert TORQUE.cancel_argv("127") == ["qdel", "127"]


def test_log_names_are_per_native_task() -> None:
    assert PBSPRO.log_name("7[].vm", 3, "stdout") == "pbs-3.out"
    assert TORQUE.log_name("127", 1, "stderr") == "pbs-1.err"


@pytest.mark.parametrize(
    ("name", "flavour", "expected"),
    [
        ("analyze genome/sequence", Flavour.PBSPRO, "analyze_genome_sequence"),
        ("123start", Flavour.PBSPRO, "c123start"),
        ("a_very_long_function_name_for_torque", Flavour.TORQUE, "a_very_long_fun"),
        ("<lambda>", Flavour.PBSPRO, "c_lambda_"),
    ],
)
def test_job_names_are_made_safe_for_qsub(name: str, flavour: Flavour, expected: str) -> None:
    assert directives.safe_job_name(name, flavour) == expected


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"qos": "high"}, "PBS does not understand 'qos'"),
        ({"account": "a\nb"}, "account="),
        ({"pbs_w": "depend=afterok:1"}, "pbs_w="),
        ({"pbs_w": ["-W depend=afterok:1"]}, "give 'name=value' without -W"),
        ({"pbs_directives": ["m abe"]}, "give one qsub option"),
        ({"pbs_flavor": "lsf"}, "pbs_flavor='lsf'"),
        ({"rerunnable": "yes"}, "rerunnable='yes'"),
        ({"calls_per_task": 0}, "calls_per_task=0"),
    ],
)
def test_bad_options_are_refused_before_submit_naming_the_parameter(extra: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        PBSPRO.validate(Resources.parse(**extra))


def test_place_is_pbspro_only_and_partition_must_agree_with_queue() -> None:
    assert "-l place=excl" in " ".join(PBSPRO.directives(job(1, Resources.parse(place="excl"))))
    with pytest.raises(ValueError, match="place= is a PBS Pro option"):
        TORQUE.validate(Resources.parse(place="excl"))
    with pytest.raises(ValueError, match="disagree: they name the same thing"):
        PBSPRO.validate(Resources(partition="a", queue="b"))


def test_values_reaching_the_script_are_quoted() -> None:
    lines = PBSPRO.directives(job(1, Resources.parse(account="p; rm -rf ~", queue="q$(x)")))
    assert "#PBS -A 'p; rm -rf ~'" in lines
    assert "#PBS -q 'q$(x)'" in lines


# ---- states ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exit_status", "flavour", "state"),
    [
        (0, Flavour.PBSPRO, JobState.COMPLETED),
        (-29, Flavour.PBSPRO, JobState.TIMEOUT),
        (-27, Flavour.PBSPRO, JobState.OUT_OF_MEMORY),
        (271, Flavour.PBSPRO, JobState.CANCELLED),
        (265, Flavour.PBSPRO, JobState.CANCELLED),
        (267, Flavour.PBSPRO, JobState.FAILED),
        (7, Flavour.PBSPRO, JobState.FAILED),
        (None, Flavour.PBSPRO, JobState.CANCELLED),
        (None, Flavour.TORQUE, JobState.COMPLETED),
        (-11, Flavour.TORQUE, JobState.TIMEOUT),
        (-10, Flavour.TORQUE, JobState.OUT_OF_MEMORY),
        (271, Flavour.TORQUE, JobState.CANCELLED),
        (-3, Flavour.PBSPRO, JobState.FAILED),
    ],
)
def test_exit_status_maps_to_a_clustrix_state(exit_status: int | None, flavour: Flavour, state: JobState) -> None:
    assert states.exit_status_verdict(exit_status, flavour).state is state


def test_finished_records_map_through_their_exit_status_and_queued_ones_through_the_letter() -> None:
    dialect = PBSPRO
    assert dialect.to_job_state(TaskRecord("9.vm", None, "F", exit_code=-29)) is JobState.TIMEOUT
    assert dialect.to_job_state(TaskRecord("7[].vm", (3,), "X", exit_code=0)) is JobState.COMPLETED
    assert dialect.to_job_state(TaskRecord("1.vm", None, "Q")) is JobState.PENDING
    assert dialect.to_job_state(TaskRecord("7[].vm", None, "B")) is JobState.RUNNING
    assert dialect.to_job_state(TaskRecord("1.vm", None, "Z")) is JobState.UNKNOWN
    assert TORQUE.to_job_state(TaskRecord("5", None, "C", exit_code=-11)) is JobState.TIMEOUT


def test_can_never_run_comment_makes_a_queued_job_never_runnable() -> None:
    (record,) = PBSPRO.parse_status((SAMPLES / "06_impossible_qstat_f_json_after_12s.json").read_text())
    assert PBSPRO.to_job_state(record) is JobState.PENDING
    assert PBSPRO.never_runnable(record) == "Can Never Run: Insufficient amount of resource: ncpus (R: 64 A: 2 T: 2)"
    (running,) = PBSPRO.parse_status((SAMPLES / "01_basic_qstat_f_json_running.json").read_text())
    assert PBSPRO.never_runnable(running) is None


def test_can_never_run_while_no_node_reports_the_resource_is_a_queue_waiting_for_nodes_not_a_failure() -> None:
    # what OpenPBS says of every queued job while the node's MOM is not back after a server restart
    comment = "Can Never Run: Insufficient amount of resource: ncpus (R: 1 A: 0 T: 0)"
    assert PBSPRO.never_runnable(TaskRecord("9.vm", None, "Q", reason=comment)) is None
    assert PBSPRO.never_runnable(TaskRecord("9.vm", None, "Q", reason=comment.replace("T: 0", "T: 2"))) is not None


def test_array_subjobs_become_task_records_of_the_id_qsub_printed() -> None:
    records = PBSPRO.parse_status((SAMPLES / "03_array_qstat_x_t_f_json_finished_with_subjobs.json").read_text())
    assert {r.job_id for r in records} == {"7[].vm"}
    assert sorted(r.tasks[0] for r in records if r.tasks) == list(range(1, 11))
    assert all(r.tasks is not None for r in records)  # the parent line is dropped: its subjobs are listed


def test_walltime_record_carries_pbs_explanation() -> None:
    (record,) = PBSPRO.parse_status((SAMPLES / "05_walltime_qstat_x_f_json.json").read_text())
    assert record.exit_code == -29
    assert record.reason is not None and "walltime" in record.reason


def test_native_job_id_of_a_subjob_is_its_array() -> None:
    subjob = parse.QstatRecord(job_id="7[3].vm", state="R", array_index=3)
    assert native_job_id(subjob) == "7[].vm"
    assert native_job_id(parse.QstatRecord(job_id="8.vm", state="R")) == "8.vm"
    assert native_job_id(parse.QstatRecord(job_id="127[4]", state="R", array_index=4)) == "127[]"


def test_unknown_job_failures_keep_the_other_records() -> None:
    assert PBSPRO.status_failure_means_unknown(153, "qstat: Unknown Job Id 999.vm\n")
    assert PBSPRO.status_failure_means_unknown(35, "qstat: 1.vm Job has finished, use -x or -H\n")
    assert not PBSPRO.status_failure_means_unknown(1, "qstat: cannot connect to server vm (errno=15010)\n")
    assert TORQUE.status_failure_means_unknown(153, "")


def test_parse_submit_refuses_what_is_not_a_job_id() -> None:
    assert PBSPRO.parse_submit("12[].vm\n") == "12[].vm"
    with pytest.raises(ParseError):
        PBSPRO.parse_submit("qsub: Unknown queue\n")


def test_site_query_reads_max_array_size() -> None:
    text = (
        "Server: vm\n    server_state = Active\n    max_array_size = 2000\n    state_count = Transit:0 Begun\n\t:0 \n"
    )
    assert PBSPRO.parse_site(text).max_array_size == 2000
    assert PBSPRO.parse_site("Server: vm\n    server_state = Active\n").max_array_size == parse.DEFAULT_MAX_ARRAY_SIZE


def test_torque_reads_xml_or_text_qstat() -> None:
    xml = (Path(__file__).parent / "samples" / "torque_qstat-x_xml_1job-C-exit0_mxenes.xml").read_text()
    (record,) = TORQUE.parse_status(xml)
    assert (record.job_id, record.state, record.exit_code) == ("73.c0", "C", 0)
    assert TORQUE.to_job_state(record) is JobState.COMPLETED


def test_every_pbs_keyword_is_accepted_at_decoration_and_a_typo_is_refused_with_a_suggestion() -> None:
    from clustrix import cluster

    extras = {"account": "proj", "place": "excl", "pbs_w": ["group_list=proj"], "rerunnable": False}

    @cluster(cluster_type="pbs", **extras)
    def f() -> None: ...

    assert f.resources.extra == extras
    with pytest.raises(ValueError, match=r"unknown keyword plac='excl'.*did you mean 'place'\?"):
        cluster(cluster_type="pbs", plac="excl")


@pytest.mark.parametrize("dialect", [PBSPRO, TORQUE], ids=["pbspro", "torque"])
@pytest.mark.parametrize("form", TIME_FORMS, ids=lambda f: repr(f.given))
def test_every_documented_time_form_becomes_a_walltime_in_hours_that_pbs_parses(dialect, form: TimeForm) -> None:
    resources = Resources.parse(time=form.given)
    dialect.validate(resources)
    lines = dialect.directives(job(1, resources))
    assert f"#PBS -l walltime={form.pbs}" in lines
    walltimes = [line.rsplit("=", 1)[1] for line in lines if "walltime=" in line]
    assert len(walltimes) == 1 and re.fullmatch(PBS_WALLTIME, walltimes[0]), walltimes
