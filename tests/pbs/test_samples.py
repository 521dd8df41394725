"""Every file of ``tests/pbs/samples`` (real PBS Pro, OpenPBS and Torque output) through the parsers.

The samples come from many sites and versions (provenance in ``samples/README.md``);
``openpbs-23.06-testbed/`` was captured on this project's machine kind. A test below
fails when a file is added without saying what the plugin makes of it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clustrix.errors import ParseError
from clustrix.plugin.types import JobState
from clustrix_pbs import parse, states
from clustrix_pbs.parse import ErrorKind, Flavour

SAMPLES = Path(__file__).parent / "samples"
TESTBED = "openpbs-23.06-testbed/"

#: Files the plugin never reads, and why (logs, job output, plain tabular qstat it never runs).
NOT_COMMAND_OUTPUT = {
    "qstat_tabular": "plain qstat tables: the plugin asks qstat -f (ids are cut to the column width)",
    "qstat-u_": "qstat -u tables: not used by the plugin",
    "qstat-su_": "qstat -s tables: the plugin reads the comment from qstat -f",
    "qstat-t_": "qstat -t tables: the plugin reads qstat -t -f -F json",
    "_qstat_running.txt": "plain qstat table",
    "_qstat_a_running.txt": "qstat -a table",
    "_qstat_J_running.txt": "qstat -J table",
    "_qstat_t_running.txt": "qstat -t table",
    "_qstat_x_finished.txt": "qstat -x table",
    "_qstat_x_t_finished.txt": "qstat -x -t table",
    "_qstat_s_after_12s.txt": "qstat -s table",
    "_log.txt": "daemon or capture logs",
    "init_d_start_output": "init script output",
    "_file.txt": "a job's own output",
    "_files.txt": "a job's own output files",
    "_listing.txt": "a directory listing",
    "stdout_concat": "the jobs' own output",
    "latency_trivial_jobs": "timings of the capture script",
    "output_file_race": "timings of the capture script",
}

#: stderr files and the error kind each line must be read as.
STDERR_KINDS = {
    "openpbs20_qstat_unknown-job-id-stderr_ionkrutov.txt": ErrorKind.UNKNOWN_JOB,
    "openpbs22_qstat-f-json_connection-refused-stderr_baw-server.txt": ErrorKind.NO_SERVER,
    "openpbs_qdel_illegally-formed-id-stderr_qtoolkit.txt": ErrorKind.BAD_JOB_ID,
    "openpbs_qdel_job-has-finished-stderr_qtoolkit.txt": ErrorKind.FINISHED,
    "openpbs_qdel_no-args-usage-stderr_qtoolkit.txt": ErrorKind.USAGE,
    "openpbs_qdel_unauthorized-stderr_qtoolkit.txt": ErrorKind.UNAUTHORIZED,
    "openpbs_qdel_unknown-job-id-stderr_qtoolkit.txt": ErrorKind.UNKNOWN_JOB,
    "openpbs_qsub_unknown-queue-stderr_qtoolkit.txt": ErrorKind.UNKNOWN_QUEUE,
    "openpbs_qsub_unknown-resource-stderr_soca.txt": ErrorKind.UNKNOWN_RESOURCE,
    "pbspro14_qdel_illegally-formed-id-stderr_dandyrilla.txt": ErrorKind.BAD_JOB_ID,
    "pbspro14_qdel_job-has-finished-stderr_dandyrilla.txt": ErrorKind.FINISHED,
    "pbspro14_qdel_unknown-job-id-stderr_dandyrilla.txt": ErrorKind.UNKNOWN_JOB,
    "pbspro14_qsub_missing-script-stderr_dandyrilla.txt": ErrorKind.NO_SCRIPT,
    "pbspro2025_qstat-f-json_no-route-stderr_baw-server.txt": ErrorKind.NO_SERVER,
    "pbspro_qstat_unknown-job-id-stderr_artemis.txt": ErrorKind.UNKNOWN_JOB,
    "pbspro_qsub_unknown-resource-stderr_lcrc-improv.txt": ErrorKind.UNKNOWN_RESOURCE,
    "torque_qdel_unauthorized-stderr_gc3pie.txt": ErrorKind.UNAUTHORIZED,
    "torque_qdel_unknown-job-id-stderr_gc3pie.txt": ErrorKind.UNKNOWN_JOB,
    "torque_qstat-x_unknown-job-id-error-stderr_bpipe-mcri.txt": ErrorKind.UNKNOWN_JOB,
    "torque_qstat_unknown-job-id-error-stderr_lsg-surfsara.txt": ErrorKind.UNKNOWN_JOB,
    "torque_qstat_unknown-job-id-stderr_gc3pie.txt": ErrorKind.UNKNOWN_JOB,
    "torque_qsub_acl-rejected-stderr_gc3pie.txt": ErrorKind.UNAUTHORIZED,
    "torque_qsub_exceeds-queue-limits-stderr_gc3pie.txt": ErrorKind.EXCEEDS_LIMITS,
    TESTBED + "10_qstat_f_json_finished_without_x.stderr": ErrorKind.FINISHED,
    TESTBED + "01_basic_qstat_f_after_finish_without_x.txt": ErrorKind.FINISHED,
}

#: qsub stdout files and the id in them (the testbed's files add the capture script's rc line).
QSUB_IDS = {
    "openpbs_qsub_batch_soca.txt": None,
    "pbspro14_qsub_batch_dandyrilla.txt": "0.sirna1",
    "pbspro14_qsub_depend_dandyrilla.txt": "6.sirna1",
    "pbspro_qsub_batch_lcrc-improv.txt": None,
    "pbspro_qsub_batch_unsw-katana.txt": "315259.kman.restech.unsw.edu.au",
    "torque_qsub_batch_lsg-surfsara.txt": "6402.gb-ce-kun.els.sara.nl",
    TESTBED + "01_basic_qsub_stdout.txt": "1.vm",
    TESTBED + "03_array_qsub_stdout.txt": "7[].vm",
    TESTBED + "06_impossible_qsub_stdout_stderr.txt": "10.vm",
    TESTBED + "06b_impossible_mem_qsub.txt": "11.vm",
    TESTBED + "06c_impossible_l_ncpus64_qsub.txt": "12.vm",
    TESTBED + "07_block_true_exit0_qsub_output.txt": "14.vm",
    TESTBED + "07_block_true_exit3_qsub_output.txt": "13.vm",
}

#: qstat -f text: (job count, {job id: (state, exit status)}) for the jobs worth pinning.
FULL_TEXT = {
    "pbspro12_qstat-f_6jobs-Q-R-H_aiida.txt": (6, {"69301.mycluster": ("R", None), "69302.mycluster": ("H", None)}),
    "torque_qstat-f_10jobs-Q-R-H-C_aiida-ichec.txt": (10, {"549159": ("H", None), "546437": ("C", 271)}),
    "pbspro_qstat-f_3jobs-R-Q_nci-gadi_pysqa.txt": (3, {"80005196.gadi-pbs": ("R", None)}),
    "pbspro_qstat-f_1job-Q_unsw-katana.txt": (1, {"315236.kman.restech.unsw.edu.au": ("Q", None)}),
    "pbspro_qstat-xf_1job-F_unsw-katana.txt": (1, {"4686875.kman.restech.unsw.edu.au": ("F", 0)}),
    "pbspro_qstat-f-grep-array_array-parent_artemis.txt": (1, {}),
    TESTBED + "05_walltime_qstat_x_f.txt": (1, {"9.vm": ("F", -29)}),
}

#: JSON files whose meaning matters most: {job id: clustrix state}.
JSON_STATES = {
    TESTBED + "01_basic_qstat_x_f_json_finished.json": {"1.vm": JobState.COMPLETED},
    TESTBED + "04_qdel_qstat_x_f_json_after.json": {"8.vm": JobState.CANCELLED},
    TESTBED + "05_walltime_qstat_x_f_json.json": {"9.vm": JobState.TIMEOUT},
    TESTBED + "06_impossible_qstat_f_json_after_12s.json": {"10.vm": JobState.FAILED},
    TESTBED + "06b_impossible_mem_qstat_f_json.json": {"11.vm": JobState.FAILED},
    TESTBED + "06c_impossible_l_ncpus64_qstat_f_json.json": {"12.vm": JobState.FAILED},
    TESTBED + "06_impossible_qstat_x_f_json_after_qdel.json": {"10.vm": JobState.CANCELLED},
    TESTBED + "08_exit7_qstat_x_f_json.json": {"15.vm": JobState.FAILED},
    TESTBED + "09_mem_enforce_mem_qstat_x_f_json_final.json": {"17.vm": JobState.OUT_OF_MEMORY},
    TESTBED + "09_mem_default_no_enforce_qstat_x_f_json_final.json": {"16.vm": JobState.COMPLETED},
    TESTBED + "03_array_parent_qstat_f_json_running.json": {"7[].vm": JobState.RUNNING},
    "pbspro19_qstat-xf-json_1job-F-exit0_buildtest.json": {"40.pbs": JobState.COMPLETED},
    "pbspro19_qstat-xf-json_1job-R_metacentrum_swrap.json": {"12860476.meta-pbs.metacentrum.cz": JobState.RUNNING},
    "openpbs20_qstat-f-json_2jobs-R_ionkrutov.json": {
        "1006.qot-calc0": JobState.RUNNING,
        "1007.qot-calc0": JobState.RUNNING,
    },
}

#: Torque XML: {job id: (state, exit status)}.
XML_JOBS = {
    "torque_qstat-x_xml_6jobs-R-Q-C-array_fyrd.xml": {
        "665199.superserver.stanford.edu": ("R", -3),
        "673175[].superserver.stanford.edu": ("C", None),
        "673175[19].fruster.stanford.edu": ("C", 0),
    },
    "torque_qstat-x_xml_1job-Q_osc-machete.xml": {"16376372.opt-batch.osc.edu": ("Q", None)},
    "torque_qstat-x_xml_2jobs-R-Q_mxenes.xml": {"72.c0": ("R", None), "73.c0": ("Q", None)},
    "torque_qstat-x_xml_1job-C-exit0_mxenes.xml": {"73.c0": ("C", 0)},
}


def all_samples() -> list[str]:
    return sorted(str(p.relative_to(SAMPLES)) for p in SAMPLES.rglob("*") if p.is_file() and p.name != "README.md")


RUN2 = "run2_after_warm_restart/"


def canonical(name: str) -> str:
    """The warm-restart run repeats the first run's scenarios (other job ids): same tables."""
    return name.replace(RUN2, "")


def kind_of(name: str) -> str:
    """Which parser a sample goes through (``""``: none, see :data:`NOT_COMMAND_OUTPUT`)."""
    name = canonical(name)
    base = name.removeprefix(TESTBED)
    for table, kind in ((STDERR_KINDS, "stderr"), (QSUB_IDS, "qsub"), (FULL_TEXT, "full")):
        if name in table:
            return kind
    if name.endswith(".json") or base.endswith("without_x.stdout"):
        return "json"
    if name.endswith(".xml"):
        return "xml"
    if name.endswith("qsub-I_interactive_unsw-katana.txt"):
        return "interactive"
    if name.endswith("04_qdel_stdout_stderr.txt"):
        return "quiet"
    if any(marker in base for marker in NOT_COMMAND_OUTPUT):
        return ""
    raise AssertionError(f"sample {name} is not classified: add it to a table in {__file__}")


def test_every_sample_file_is_classified_and_the_tables_name_real_files() -> None:
    names = all_samples()
    assert len(names) > 100
    for name in names:
        kind_of(name)
    for table in (STDERR_KINDS, QSUB_IDS, FULL_TEXT, JSON_STATES, XML_JOBS):
        missing = sorted(set(table) - set(names))
        assert not missing, f"tables name files that do not exist: {missing}"


@pytest.mark.parametrize("name", [n for n in all_samples() if kind_of(n) == "json"])
def test_qstat_json_sample_parses_into_records_with_known_states(name: str) -> None:
    text = (SAMPLES / name).read_text()
    records = parse.parse_qstat_json(text)
    header = parse.qstat_json_header(text)
    assert "pbs_version" in header
    for record in records:
        assert parse.is_job_id(record.job_id), record.job_id
        assert record.state in {*states.NATIVE_STATES, *states.FINAL_STATES}
    expected = JSON_STATES.get(canonical(name))
    if expected is not None and RUN2 in name:  # same scenario, other job ids
        assert sorted(states.verdict(r).state.value for r in records) == sorted(s.value for s in expected.values())
    elif expected is not None:
        found = {r.job_id: states.verdict(r).state for r in records}
        assert {k: found.get(k) for k in expected} == expected


def test_qstat_json_without_jobs_is_empty_and_merged_stderr_is_skipped() -> None:
    assert (
        parse.parse_qstat_json(
            (SAMPLES / "openpbs22_qstat-f-json_connection-refused-stdout_baw-server.json").read_text()
        )
        == []
    )
    merged = (SAMPLES / TESTBED / "09_mem_enforce_mem_qstat_f_json_at_35s.json").read_text()
    assert merged.startswith("qstat: ")
    assert parse.parse_qstat_json(merged) == []
    with pytest.raises(ParseError):
        parse.parse_qstat_json("qstat: cannot connect to server vm (errno=15010)\n")


def test_qstat_json_array_with_subjobs_has_one_record_per_subjob_and_the_parent() -> None:
    text = (SAMPLES / TESTBED / "03_array_qstat_x_t_f_json_finished_with_subjobs.json").read_text()
    records = parse.parse_qstat_json(text)
    parents = [r for r in records if r.array_parent]
    assert [r.job_id for r in parents] == ["7[].vm"]
    assert sorted(r.array_index for r in records if not r.array_parent) == list(range(1, 11))
    assert all(r.exit_status == 0 for r in records)


@pytest.mark.parametrize("name", [n for n in all_samples() if kind_of(n) == "full"])
def test_qstat_full_text_sample_parses_with_tab_or_space_continuations(name: str) -> None:
    records = parse.parse_qstat_full((SAMPLES / name).read_text())
    count, pinned = FULL_TEXT[canonical(name)]
    assert len(records) == count
    if RUN2 in name:
        pinned = {}
    found = {r.job_id: (r.state, r.exit_status) for r in records}
    assert {k: found.get(k) for k in pinned} == pinned


def test_continuation_lines_join_whether_they_start_with_a_tab_or_with_spaces() -> None:
    tabs = parse.parse_qstat_full((SAMPLES / "pbspro_qstat-xf_1job-F_unsw-katana.txt").read_text())[0]
    spaces = parse.parse_qstat_full((SAMPLES / "pbspro_qstat-f_3jobs-R-Q_nci-gadi_pysqa.txt").read_text())[0]
    assert "\n" not in tabs.attributes["Variable_List"] and "PBS_O_WORKDIR=" in tabs.attributes["Variable_List"]
    assert spaces.attributes["Error_Path"].endswith("test1.e80005196")
    assert spaces.attributes["Resource_List.select"].endswith("job_tags=normal:jobfs=104857600")


def test_torque_values_with_raw_newlines_stay_in_their_attribute() -> None:
    records = parse.parse_qstat_full((SAMPLES / "torque_qstat-f_10jobs-Q-R-H-C_aiida-ichec.txt").read_text())
    hinted = [r for r in records if "sched_hint" in r.attributes]
    assert hinted and "Unable to copy file" in hinted[0].attributes["sched_hint"]
    assert all(parse.is_job_id(r.job_id) for r in records)


def test_grep_array_fragment_reads_as_an_array_parent() -> None:
    (record,) = parse.parse_qstat_full((SAMPLES / "pbspro_qstat-f-grep-array_array-parent_artemis.txt").read_text())
    assert record.array_parent
    assert record.attributes["array_indices_submitted"] == "1-10"


@pytest.mark.parametrize("name", [n for n in all_samples() if kind_of(n) == "xml"])
def test_torque_xml_sample_parses(name: str) -> None:
    records = parse.parse_qstat_xml((SAMPLES / name).read_text())
    found = {r.job_id: (r.state, r.exit_status) for r in records}
    assert {k: found.get(k) for k in XML_JOBS[name]} == XML_JOBS[name]


def test_torque_xml_array_parent_and_subjobs_are_told_apart() -> None:
    records = parse.parse_qstat_xml((SAMPLES / "torque_qstat-x_xml_6jobs-R-Q-C-array_fyrd.xml").read_text())
    assert [r.job_id for r in records if r.array_parent] == ["673175[].superserver.stanford.edu"]
    assert sorted(r.array_index for r in records if r.array_index is not None) == [19, 20]
    nested = next(r for r in records if r.job_id == "16376372.opt-batch.osc.edu" or r.state == "R")
    assert any(key.startswith("Resource_List.") for key in nested.attributes)


@pytest.mark.parametrize("name", [n for n in all_samples() if kind_of(n) == "qsub"])
def test_qsub_sample_gives_the_job_id(name: str) -> None:
    text = (SAMPLES / name).read_text()
    first = text.splitlines()[0]
    expected = (RUN2 not in name and QSUB_IDS[canonical(name)]) or first.strip()
    # the testbed's files add the capture script's "rc=..." line after qsub's own output
    assert parse.parse_qsub(first if name.startswith(TESTBED) else text) == expected


def test_interactive_qsub_output_is_not_mistaken_for_a_job_id() -> None:
    with pytest.raises(ParseError):
        parse.parse_qsub((SAMPLES / "pbspro_qsub-I_interactive_unsw-katana.txt").read_text())


@pytest.mark.parametrize("name", [n for n in all_samples() if kind_of(n) == "stderr"])
def test_stderr_sample_is_classified(name: str) -> None:
    lines = [line for line in (SAMPLES / name).read_text().splitlines() if line.strip() and not line.startswith("rc=")]
    errors = parse.classify_errors("\n".join(lines))
    kinds = {e.kind for e in errors if e.kind is not ErrorKind.OTHER}
    assert STDERR_KINDS[canonical(name)] in kinds


def test_unknown_and_finished_job_ids_are_extracted_from_stderr() -> None:
    assert parse.gone_job_ids((SAMPLES / "openpbs20_qstat_unknown-job-id-stderr_ionkrutov.txt").read_text()) == {
        "2001.g3",
        "2002.g3",
        "2003.g3",
    }
    assert parse.gone_job_ids((SAMPLES / "openpbs_qdel_job-has-finished-stderr_qtoolkit.txt").read_text()) == {"8"}
    assert parse.gone_job_ids((SAMPLES / TESTBED / "10_qstat_f_json_finished_without_x.stderr").read_text()) == {"1.vm"}
    refused = (SAMPLES / "openpbs22_qstat-f-json_connection-refused-stderr_baw-server.txt").read_text()
    assert parse.server_unreachable(refused) and not parse.gone_job_ids(refused)


def test_qdel_with_nothing_to_say_is_quiet() -> None:
    text = (SAMPLES / TESTBED / "04_qdel_stdout_stderr.txt").read_text()
    assert [e for e in parse.classify_errors(text) if not e.line.startswith("qdel rc=")] == []


def test_flavour_is_pbspro_for_pbs_version_and_torque_otherwise() -> None:
    assert parse.detect_flavour("pbs_version = 23.06.06\n") is Flavour.PBSPRO
    assert parse.detect_flavour("Version: 6.1.2\n") is Flavour.TORQUE
    with pytest.raises(ParseError):
        parse.detect_flavour("  \n")
