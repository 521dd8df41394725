"""Reading what the batch engine's scripts print (pure; see :mod:`clustrix.batch.shell`)."""

from __future__ import annotations

import attrs

from clustrix.batch.status import JobFiles
from clustrix.errors import ReportError
from clustrix.remote.report import Frames


@attrs.define
class QueryOutput:
    """A scheduler query run inside a script: its stdout, exit code and stderr."""

    stdout: str = ""
    returncode: int = 0
    stderr: str = ""


@attrs.define
class PollReport(Frames):
    """One poll round: the status query's output (if it ran) and each job's files and outcomes."""

    query: QueryOutput | None = None
    files: dict[str, JobFiles] = attrs.field(factory=dict)
    swept: set[str] = attrs.field(factory=set)
    logs: dict[int, str] = attrs.field(factory=dict)


def _files(words: list[str], current: JobFiles | None) -> JobFiles:
    base = current or JobFiles()
    kind, values = words[0], words[1:]
    if kind == "files":
        exits = {}
        for item in values:
            task, _, code = item.partition(":")
            if task.isdigit():
                exits[int(task)] = int(code) if code.lstrip("-").isdigit() else 1
        return attrs.evolve(base, exits=exits)
    if kind == "outs" and values and values[0].isdigit():
        failed = int(values[1]) if len(values) > 1 and values[1].isdigit() else 0
        return attrs.evolve(base, outcomes=int(values[0]), failed_outcomes=failed)
    if kind == "claims" and values and values[0].isdigit():
        return attrs.evolve(base, claims=int(values[0]))
    if kind == "failed":
        return attrs.evolve(base, failed=frozenset(int(v) for v in values if v.isdigit()))
    if kind == "cancelled":
        return attrs.evolve(base, cancelled=True)
    return base


def parse_report(data: bytes, marker: str, job_ids: set[str] | frozenset[str] = frozenset()) -> PollReport:
    """Parse a poll, query, fetch or logs script's output; a cut-short frame raises :class:`ReportError`."""
    report = PollReport()
    tag = "@" + marker
    pos = 0
    query_lines: list[str] | None = None
    log_task: int | None = None
    log_lines: list[str] = []

    def end_log() -> None:
        if log_task is not None:
            report.logs[log_task] = "".join(log_lines).removesuffix("\n")

    while pos < len(data):
        newline = data.find(b"\n", pos)
        if newline < 0:
            newline = len(data)
        raw = data[pos : newline + 1].decode(errors="replace")
        line = raw.rstrip("\n")
        pos = newline + 1
        words = line.split()
        if words and words[0] == tag:
            rest = words[1:]
            if rest[:1] == ["status-begin"]:
                query_lines = []
            elif rest[:1] == ["status-end"] and query_lines is not None:
                code = int(rest[1]) if len(rest) > 1 and rest[1].lstrip("-").isdigit() else 1
                stdout = "".join(query_lines)
                report.query = QueryOutput(stdout=stdout.removesuffix("\n"), returncode=code)
                query_lines = None
            elif rest[:1] == ["status-err"] and report.query is not None:
                report.query.stderr += line.split("status-err", 1)[1].removeprefix(" ") + "\n"
            elif rest[:1] == ["log"] and len(rest) > 1 and rest[1].isdigit():
                end_log()
                log_task, log_lines = int(rest[1]), []
            elif len(rest) >= 2 and rest[1] == "swept":
                report.swept.add(rest[0])
            elif len(rest) >= 2:
                report.files[rest[0]] = _files(rest[1:], report.files.get(rest[0]))
            continue
        if query_lines is not None:
            query_lines.append(raw)
            continue
        if log_task is not None:
            log_lines.append(raw)
            continue
        if len(words) >= 2 and (not job_ids or words[0] in job_ids):
            pos = report.read(data, pos, words) or pos
    if query_lines is not None:
        raise ReportError("the scheduler query's output was cut short")
    end_log()
    return report
