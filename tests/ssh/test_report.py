"""Parsing what the poll, watch and fetch scripts print (pure: no sshd needed)."""

from __future__ import annotations

import base64

import pytest

from clustrix.plugin.types import JobState
from clustrix_ssh.report import ReportError, parse_report


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
        b"j1 done 0\n"
        + frame("j1", tricky, raw=raw)
        + b"j2 running\nj3 gone\n"
        + frame("j3", {}, raw=raw)
        + b"j4 cancelled\nj4 outcomes-deferred 9999999\nj5 done 1\nj5 unsafe\n"
    )
    report = parse_report(data)
    assert report.outcomes["j1"] == tricky and report.outcomes["j3"] == {}
    assert {k: s.state for k, s in report.statuses.items()} == {
        "j1": JobState.COMPLETED,
        "j2": JobState.RUNNING,
        "j3": JobState.FAILED,
        "j4": JobState.CANCELLED,
        "j5": JobState.COMPLETED,
    }
    assert report.statuses["j5"].exit_code == 1
    assert report.deferred == {"j4"} and set(report.unsafe) == {"j5"}


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "base64"])
def test_a_frame_cut_short_is_an_error_not_a_short_outcome(raw: bool) -> None:
    whole = frame("j1", {0: b"x" * 1000}, raw=raw)
    with pytest.raises(ReportError):
        parse_report(b"j1 done 0\n" + whole[: len(whole) // 2])
