"""Pure parsers for what Grid Engine's commands print (``qsub``, ``qstat``, ``qacct``, ``qconf``).

The argv that produce these texts live next to their parsers, so format and parser
cannot drift apart. Captured real output of Son of Grid Engine 8.1.9 is kept under
``tests/sge/fixtures`` (``tests/sge/capture_fixtures.py`` makes it).
"""

from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Mapping, Sequence

import attrs

from clustrix.batch.dialect import expand_task_ids
from clustrix.errors import ParseError

__all__ = [
    "AccountingRecord",
    "QstatJob",
    "max_aj_tasks",
    "memory_bytes",
    "parse_qacct",
    "parse_qconf",
    "parse_qstat_j_errors",
    "parse_qstat_xml",
    "parse_qsub_terse",
    "seconds",
]

#: The line the status command prints before the ``qstat -j`` details of a job in an error state.
DETAILS_MARK = "#clustrix-qstat-j "

#: ``sh -c`` program of the status query: one ``qstat -xml`` of the user's own jobs (a site may
#: make ``qstat`` list everyone's by default), then ``qstat -j`` for the listed jobs
#: (positional arguments) that are in an error state (``E`` in their state), so the reason comes
#: back in the same command. Only the user's own listed jobs are ever detailed.
_STATUS_PROGRAM = """out=$(qstat -xml -u "$(id -un)") || { rc=$?; printf '%s\\n' "$out"; exit "$rc"; }
printf '%s\\n' "$out"
errored=$(printf '%s\\n' "$out" | awk -F'[<>]' '/<JB_job_number>/ {n = $3} /<state>/ {if ($3 ~ /E/) print n}')
for id in "$@"; do
  for e in $errored; do
    if [ "$id" = "$e" ]; then printf '%s%s\\n' '@MARK@' "$id"; qstat -j "$id"; break; fi
  done
done
exit 0
""".replace("@MARK@", DETAILS_MARK)

#: ``sh -c`` program of the history query: ``qacct -j`` for each listed job (``qacct`` takes one id);
#: an id not in the accounting file yet prints to stderr and is skipped.
_HISTORY_PROGRAM = 'for id in "$@"; do qacct -j "$id" || :; done'


#: ``sh -c`` program that deletes the still *pending* tasks of array ``$1`` (every call is done):
#: their ranges from ``qstat -xml`` (``1-5:1``, ``5,6``), each handed to ``qdel JOB -t RANGE``.
#: The pending tasks of a ``-hold_jid_ad`` dependant whose upstream tasks were deleted are listed
#: as ``qw`` but refused by task (``task id range "30-100:1" comprises no tasks``, ``task "13" does
#: not exist``) until the scheduler dispatches them; only ``qdel JOB`` takes them, so a refused range
#: deletes the whole job (its running tasks have no call left: every outcome is written).
_SWEEP_PROGRAM = """qstat -xml -u "$(id -un)" | awk -F'[<>]' -v id="$1" '/<JB_job_number>/ {n = $3} /<state>/ {s = $3}
  /<tasks>/ {if (n == id && s ~ /^h?qw$/) print $3}' | tr ',' '\\n' | while read -r range; do
  qdel "$1" -t "$range" 2>&1 | grep -e 'comprises no tasks' -e 'does not exist' >/dev/null && echo refused
done | grep refused >/dev/null && qdel "$1"
exit 0
"""


def sweep_argv(native_id: str) -> list[str]:
    """Delete the array's pending tasks (running ones finish writing their exit files)."""
    return ["sh", "-c", _SWEEP_PROGRAM, "sh", native_id]


def status_argv(native_ids: Sequence[str]) -> list[str]:
    """One command per poll round: ``qstat -xml`` for all the user's jobs (+ ``qstat -j`` for errored ones)."""
    return ["sh", "-c", _STATUS_PROGRAM, "sh", *native_ids]


def history_argv(native_ids: Sequence[str]) -> list[str]:
    """One command for the jobs that left qstat: ``qacct -j`` of each."""
    return ["sh", "-c", _HISTORY_PROGRAM, "sh", *native_ids]


def qconf_sconf_argv() -> list[str]:
    """``qconf -sconf``: the global configuration (``max_aj_tasks``)."""
    return ["qconf", "-sconf"]


# ---------------------------------------------------------------------------
# qsub, qconf
# ---------------------------------------------------------------------------


def parse_qsub_terse(text: str) -> str:
    """``qsub -terse`` prints ``ID`` or, for an array, ``ID.FIRST-LAST:STEP``; return the job id."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ParseError("qsub -terse printed nothing")
    job_id = lines[-1].split(".", 1)[0]
    if not job_id.isdigit():
        raise ParseError(f"qsub -terse printed {text.strip()!r}, not a job id")
    return job_id


def parse_qconf(text: str) -> dict[str, str]:
    """``qconf -s...`` output (``name  value`` lines; a trailing ``\\`` continues a value) as a dict, in order."""
    values: dict[str, str] = {}
    key: str | None = None
    continued = False
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if continued and key is not None:
            values[key] = f"{values[key]} {raw.strip()}".strip()
        else:
            key, _, value = raw.strip().partition(" ")
            values[key] = value.strip()
        continued = values[key].endswith("\\")
        if continued:
            values[key] = values[key][:-1].rstrip()
    return values


#: ``max_aj_tasks 0`` means "no limit"; the engine still needs a number.
UNLIMITED_TASKS = 1_000_000


def max_aj_tasks(config: Mapping[str, str], default: int) -> int:
    """The most tasks one array may have (``max_aj_tasks`` of the global configuration)."""
    try:
        value = int(config.get("max_aj_tasks", default))
    except ValueError:
        return default
    return UNLIMITED_TASKS if value == 0 else max(1, value)


# ---------------------------------------------------------------------------
# values: memory, time
# ---------------------------------------------------------------------------

_MEMORY = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMGTkmgt]?)(B?)\s*$")
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def memory_bytes(text: str) -> int | None:
    """``"200M"``, ``"271.191MB"``, ``"4.457KB"``, ``"1G"``, ``"0.000B"`` -> bytes (K/M/G are 1024-based here)."""
    match = _MEMORY.match(text)
    if not match:
        return None
    number, unit, _ = match.groups()
    return math.ceil(float(number) * _UNITS[unit.upper()])


def seconds(text: str) -> int | None:
    """``"3"``, ``"0:0:3"``, ``"01:00:00"``, ``"3s"`` -> whole seconds."""
    text = text.strip().rstrip("s")
    try:
        parts = [float(p) if p else 0.0 for p in text.split(":")]
    except ValueError:
        return None
    total = 0.0
    for part in parts:
        total = total * 60 + part
    return math.ceil(total)


# ---------------------------------------------------------------------------
# qstat -xml (+ the qstat -j details the status command appends)
# ---------------------------------------------------------------------------


@attrs.frozen
class QstatJob:
    """One ``job_list`` of ``qstat -xml``: a job, or some tasks of an array, in one state.

    ``tasks`` is None for a job without a ``tasks`` element (not an array, or one SGE
    reports as a whole); ``reason`` is the ``qstat -j`` error reason when it was asked.
    """

    job_id: str
    tasks: tuple[int, ...] | None
    state: str
    queue: str | None = None
    reason: str | None = None


def parse_qstat_xml(text: str) -> list[QstatJob]:
    """The ``job_list`` elements of ``qstat -xml`` (running ones first, as qstat prints them)."""
    xml, _, details = text.partition(DETAILS_MARK)
    if not xml.strip():
        return []
    try:
        root = ElementTree.fromstring(xml.strip())
    except ElementTree.ParseError as exc:
        raise ParseError(f"qstat -xml printed something that is not XML: {exc}") from None
    reasons = parse_qstat_j_errors(DETAILS_MARK + details) if details else {}
    jobs = []
    for element in root.iter("job_list"):
        job_id = (element.findtext("JB_job_number") or "").strip()
        if not job_id.isdigit():
            raise ParseError(f"qstat -xml has a job_list without a job number: {ElementTree.tostring(element)!r}")
        task_text = (element.findtext("tasks") or "").strip()
        tasks = expand_task_ids(task_text) if task_text else None
        state = (element.findtext("state") or "").strip()
        queue = (element.findtext("queue_name") or "").strip() or None
        reason = None
        if "E" in state and job_id in reasons:
            by_task = reasons[job_id]
            wanted = tasks or tuple(by_task)
            reason = next((by_task[t] for t in wanted if t in by_task), None) or next(iter(by_task.values()), None)
        jobs.append(QstatJob(job_id, tasks, state, queue, reason))
    return jobs


_ERROR_REASON = re.compile(r"^error reason\s+(\d+):\s*(.*)$")
_TIMESTAMP = re.compile(r"^\d\d/\d\d/\d{4} \d\d:\d\d:\d\d \[[0-9:]+\]:\s*")


def parse_qstat_j_errors(text: str) -> dict[str, dict[int, str]]:
    """The ``error reason N:`` lines of ``qstat -j`` output, by job id and task (the timestamp cut off).

    Accepts plain ``qstat -j ID`` output (the job id read from ``job_number:``) and the
    status command's sections, each starting with :data:`DETAILS_MARK` and the id.
    """
    reasons: dict[str, dict[int, str]] = {}
    job_id = ""
    for line in text.splitlines():
        if line.startswith(DETAILS_MARK):
            job_id = line[len(DETAILS_MARK) :].strip()
            continue
        key, _, value = line.partition(":")
        if key.strip() == "job_number":
            job_id = value.strip()
            continue
        match = _ERROR_REASON.match(line.strip())
        if match and job_id:
            reasons.setdefault(job_id, {})[int(match.group(1))] = _TIMESTAMP.sub("", match.group(2)).strip()
    return reasons


# ---------------------------------------------------------------------------
# qacct -j
# ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class AccountingRecord:
    """One ``qacct -j`` record: one run of one task (a rescheduled task has one per run).

    ``failed`` is Grid Engine's failure code (0: none; 37: killed for a limit; 100: killed,
    e.g. by ``qdel``; 25: rescheduled), ``failed_text`` its words; ``limits`` the ``-l``
    requests of the job's ``category`` (``h_rt`` in seconds, memory in bytes).
    """

    job_id: str
    task: int | None
    failed: int
    failed_text: str = ""
    exit_status: int | None = None
    wallclock: int | None = None
    maxvmem: int | None = None
    slots: int = 1
    queue: str | None = None
    project: str | None = None
    account: str | None = None
    granted_pe: str | None = None
    limits: Mapping[str, str] = attrs.field(factory=dict)


def category_limits(category: str) -> dict[str, str]:
    """``-q short.q -l h_rt=3,h_vmem=200M -pe smp 2`` -> ``{"h_rt": "3", "h_vmem": "200M"}``."""
    limits: dict[str, str] = {}
    words = category.split()
    for flag, value in itertools.pairwise(words):
        if flag in ("-l", "-hard"):
            for item in value.split(","):
                name, sep, setting = item.partition("=")
                if sep:
                    limits[name.strip()] = setting.strip()
    return limits


def _int(text: str | None) -> int | None:
    try:
        return int((text or "").split()[0])
    except (ValueError, IndexError):
        return None


def _none_word(text: str | None) -> str | None:
    text = (text or "").strip()
    return None if text in ("", "NONE", "undefined") else text


def _records(text: str) -> Iterable[dict[str, str]]:
    block: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("====="):
            if block:
                yield block
            block = {}
            continue
        key, _, value = line.strip().partition(" ")
        if key:
            block[key] = value.strip()
    if block:
        yield block


def parse_qacct(text: str) -> list[AccountingRecord]:
    """Every record of one or more ``qacct -j`` outputs, in the file's order (the latest run last)."""
    records = []
    for block in _records(text):
        job_id = block.get("jobnumber", "")
        if not job_id.isdigit():
            raise ParseError(f"qacct printed a record without a job number: {block!r}")
        failed_field = block.get("failed", "0")
        code, _, words = failed_field.partition(":")
        failed = _int(code)
        if failed is None:
            raise ParseError(f"qacct printed failed={failed_field!r} for job {job_id}")
        records.append(
            AccountingRecord(
                job_id=job_id,
                task=_int(block.get("taskid")),
                failed=failed,
                failed_text=words.strip(),
                exit_status=_int(block.get("exit_status")),
                wallclock=seconds(block["ru_wallclock"]) if "ru_wallclock" in block else None,
                maxvmem=memory_bytes(block.get("maxvmem", "")),
                slots=_int(block.get("slots")) or 1,
                queue=_none_word(block.get("qname")),
                project=_none_word(block.get("project")),
                account=_none_word(block.get("account")),
                granted_pe=_none_word(block.get("granted_pe")),
                limits=category_limits(block.get("category", "")),
            )
        )
    return records
