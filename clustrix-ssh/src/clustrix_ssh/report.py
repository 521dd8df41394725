"""Reading what the poll, watch and fetch scripts print (pure; see :mod:`clustrix_ssh.scripts`).

A report is a sequence of lines ``ID WORD ...`` for job states, each final job followed by
its outcome frame, ``ID outcomes-deferred TOTAL`` or ``ID unsafe REASON ENTRY`` (see
:mod:`clustrix.remote.report`).
"""

from __future__ import annotations

import attrs

from clustrix.batch.status import JobFiles, call_counts
from clustrix.plugin.types import JobState, JobStatus
from clustrix.remote.report import Frames, ReportError

#: Sent by a poll or watch: "<id> done <max exit code>" | "<id> running <outcomes> <failed> <claims>" |
#: "<id> gone" | "<id> cancelled"
STATE_WORDS = ("done", "running", "gone", "cancelled")

GONE_REASON = "the job's processes are gone and not every task wrote its exit file (killed, or the runner crashed)"


@attrs.define
class Report(Frames):
    """Job states, and for final jobs their outcome files (call index to bytes) or why not."""

    statuses: dict[str, JobStatus] = attrs.field(factory=dict)
    #: what a running job's files told: its outcomes, of which failed, and claims (see ``counts`` in the scripts)
    files: dict[str, JobFiles] = attrs.field(factory=dict)


def _status(words: list[str]) -> JobStatus:
    word = words[1]
    if word == "done":
        code = int(words[2]) if len(words) > 2 and words[2].lstrip("-").isdigit() else None
        return JobStatus(state=JobState.COMPLETED, exit_code=code)
    if word == "running":
        return JobStatus(state=JobState.RUNNING)
    if word == "cancelled":
        return JobStatus(state=JobState.CANCELLED, reason="cancelled: the process group was killed")
    return JobStatus(state=JobState.FAILED, reason=GONE_REASON)


def counted(status: JobStatus, files: JobFiles | None, n_calls: int) -> JobStatus:
    """``status`` with the job's calls counted from what its running line told (as is without one)."""
    return status if files is None else attrs.evolve(status, counts=call_counts(files, n_calls))


def parse_report(data: bytes) -> Report:
    """Parse a report; a frame that is cut short raises :class:`ReportError`."""
    report = Report()
    pos = 0
    while pos < len(data):
        newline = data.find(b"\n", pos)
        if newline < 0:
            newline = len(data)
        words = data[pos:newline].decode(errors="replace").split()
        pos = newline + 1
        if len(words) < 2:
            continue
        if words[1] in STATE_WORDS:
            report.statuses[words[0]] = _status(words)
            numbers = words[2:5]
            if words[1] == "running" and len(numbers) == 3 and all(n.isdigit() for n in numbers):
                outcomes, failed, claims = map(int, numbers)
                report.files[words[0]] = JobFiles(outcomes=outcomes, failed_outcomes=failed, claims=claims)
        else:
            pos = report.read(data, pos, words) or pos
    return report


__all__ = ["GONE_REASON", "STATE_WORDS", "Report", "ReportError", "counted", "parse_report"]
