"""Reading what the poll, watch and fetch scripts print (pure; see :mod:`clustrix_ssh.scripts`).

A report is a sequence of lines ``ID WORD ...`` for job states, each final job followed by
its outcome frame::

    ID outcomes N TOTAL ENCODING     ENCODING is base64 or raw
    SIZE INDEX                       N lines, in the order the files follow
    ID data
    <the concatenated outcome files: base64 lines, or TOTAL raw bytes and a newline>
    ID end

or by ``ID outcomes-deferred TOTAL`` (too large to inline: fetch sends one command for
them) or ``ID unsafe REASON ENTRY`` (a job file could have been written by another user).
"""

from __future__ import annotations

import attrs

from clustrix.jobs import JobState, JobStatus
from clustrix.report import ReportError, read_frame

#: Sent by a poll or watch: "<id> done <max exit code>" | "<id> running" | "<id> gone" | "<id> cancelled"
STATE_WORDS = ("done", "running", "gone", "cancelled")

GONE_REASON = "the job's processes are gone and not every task wrote its exit file (killed, or the runner crashed)"


@attrs.define
class Report:
    """Job states, and for final jobs their outcome files (call index to bytes) or why not."""

    statuses: dict[str, JobStatus] = attrs.field(factory=dict)
    outcomes: dict[str, dict[int, bytes]] = attrs.field(factory=dict)
    deferred: set[str] = attrs.field(factory=set)
    #: job id -> (reason word, entry relative to the job dir) of a job whose files may not be trusted
    unsafe: dict[str, tuple[str, str]] = attrs.field(factory=dict)


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
        job_id, word = words[0], words[1]
        if word in STATE_WORDS:
            report.statuses[job_id] = _status(words)
        elif word == "unsafe":
            report.unsafe[job_id] = (words[2], words[3]) if len(words) >= 4 else ("unchecked", ".")
        elif word == "outcomes-deferred":
            report.deferred.add(job_id)
        elif word == "outcomes" and len(words) == 5:
            files, pos = read_frame(data, pos, job_id, int(words[2]), int(words[3]), words[4])
            report.outcomes[job_id] = files
    return report


__all__ = ["GONE_REASON", "STATE_WORDS", "Report", "ReportError", "parse_report"]
