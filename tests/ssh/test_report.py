"""Reading what the poll, watch and fetch scripts print for the ssh backend (pure: no sshd needed).

The ssh backend speaks the batch engine's one report protocol (:mod:`clustrix.batch.reports`,
frames of :mod:`clustrix.remote.report`); a job's state comes from its files, decided by
:mod:`clustrix.batch.status` as for every dialect.
"""

from __future__ import annotations

import base64

import pytest

from clustrix.batch.reports import parse_report
from clustrix.batch.status import as_cancelled, status_from_files
from clustrix.errors import ReportError
from clustrix.plugin.types import JobState
from clustrix_ssh.dialect import TIMED_OUT, SSHDialect


def frame(job_id: str, files: dict[int, bytes], *, raw: bool) -> bytes:
    blob = b"".join(files.values())
    head = f"{job_id} outcomes {len(files)} {len(blob)} {'raw' if raw else 'base64'}\n"
    head += "".join(f"{len(data)} {index}\n" for index, data in files.items())
    head += f"{job_id} data\n"
    body = blob + b"\n" if raw else base64.encodebytes(blob)
    return head.encode() + body + f"{job_id} end\n".encode()


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "base64"])
def test_states_and_outcome_frames_of_several_jobs_are_read_back_byte_identical(raw: bool) -> None:
    tricky = {1: b"a\nb end\n" * 50, 0: bytes(range(256)), 2: b""}  # newlines, "end", every byte, empty
    data = (
        b"@m j1 files 0:0\n@m j1 outs 3 0\n"
        + frame("j1", tricky, raw=raw)
        + b"@m j2 files\n@m j2 outs 0 0\n@m j2 claims 1\n@m j3 files\n"
        + frame("j3", {}, raw=raw)
        + b"@m j4 files\n@m j4 cancelled\nj4 outcomes-deferred 9999999\n"
        + f"@m j5 files 0:1\n@m j6 files 0:{TIMED_OUT}\n".encode()
        + b"j5 unsafe\n"
    )
    report = parse_report(data, "m", {"j1", "j2", "j3", "j4", "j5", "j6"})
    assert report.outcomes["j1"] == tricky and report.outcomes["j3"] == {}
    timeout = SSHDialect.timeout_exit_code
    states = {
        job_id: as_cancelled(status_from_files(files, 1, 3, timeout), files) for job_id, files in report.files.items()
    }
    assert {k: None if s is None else s.state for k, s in states.items()} == {
        "j1": JobState.COMPLETED,
        "j2": None,  # running: the status query decides
        "j3": None,  # gone without its exit file: the status query decides (not alive: FAILED, see lost_reason)
        "j4": JobState.CANCELLED,
        "j5": JobState.FAILED,
        "j6": JobState.TIMEOUT,
    }
    assert states["j5"] is not None and states["j5"].exit_code == 1
    assert report.files["j2"].claims == 1
    assert report.deferred == {"j4"} and set(report.unsafe) == {"j5"}


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "base64"])
def test_a_frame_cut_short_is_an_error_not_a_short_outcome(raw: bool) -> None:
    whole = frame("j1", {0: b"x" * 1000}, raw=raw)
    with pytest.raises(ReportError):
        parse_report(b"@m j1 files 0:0\n" + whole[: len(whole) // 2], "m", {"j1"})


def test_the_status_query_output_becomes_running_records_keyed_by_the_native_id() -> None:
    d = SSHDialect()
    assert d.parse_submit("4242:20261207-123456-ab12\n") == "4242:20261207-123456-ab12"
    records = d.parse_status("4242:20261207-123456-ab12 RUNNING\n")
    assert [(r.job_id, d.to_job_state(r)) for r in records] == [("4242:20261207-123456-ab12", JobState.RUNNING)]
