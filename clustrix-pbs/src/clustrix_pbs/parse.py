"""Pure parsers for what PBS Pro/OpenPBS and Torque commands print.

Every ``qstat`` form ends as the same :class:`QstatRecord`: OpenPBS's JSON
(``qstat -f -F json``, ``qstat -x -f -F json``), the ``qstat -f`` text of both
flavours (continuation lines start with a TAB, or with spaces where a copy lost
the tabs) and Torque's XML (``qstat -x``). Attributes are kept flat, nested names
joined with dots (``Resource_List.walltime``), as ``qstat -f`` prints them.
Captured real outputs are under ``tests/pbs/fixtures``; the samples the tests also
read come from many sites and versions.
"""

from __future__ import annotations

import enum
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from clustrix.errors import ParseError

# ---------------------------------------------------------------------------
# qsub
# ---------------------------------------------------------------------------

#: ``1234``, ``1234.server``, ``7[].vm``, ``80005196.gadi-pbs``: what qsub prints on success.
_JOB_ID = re.compile(r"^[0-9]+(\[[0-9]*\])?(\.[A-Za-z0-9_.-]+)?$")


def parse_qsub(text: str) -> str:
    """The job id ``qsub`` printed (its last non-empty line); ``ParseError`` for anything else."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or not _JOB_ID.match(lines[-1]):
        raise ParseError(f"qsub printed {text.strip()!r}, not a job id")
    return lines[-1]


def is_job_id(text: str) -> bool:
    return bool(_JOB_ID.match(text.strip()))


def sequence_number(job_id: str) -> str:
    """``"7[].vm"`` -> ``"7"``, ``"315236.kman"`` -> ``"315236"``: the server's job number."""
    return re.split(r"[\[.]", job_id.strip(), maxsplit=1)[0]


def array_index_of(job_id: str) -> int | None:
    """``"7[3].vm"`` -> 3; ``None`` for a plain job or an array parent ``"7[].vm"``."""
    match = re.match(r"^[0-9]+\[([0-9]+)\]", job_id.strip())
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------------------
# qstat records
# ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class QstatRecord:
    """One job, array parent or array subjob as ``qstat`` describes it.

    ``exit_status`` is ``Exit_status`` (PBS Pro) or ``exit_status`` (Torque), None
    while the job runs or when it was deleted before it started. ``array_index`` is
    set for a subjob (``7[3].vm``, PBS Pro's ``array_index``, Torque's ``job_array_id``).
    """

    job_id: str
    state: str
    exit_status: int | None = None
    comment: str | None = None
    queue: str | None = None
    name: str | None = None
    array_parent: bool = False
    array_index: int | None = None
    attributes: Mapping[str, str] = attrs.field(factory=dict, eq=False, hash=False)

    @property
    def sequence(self) -> str:
        return sequence_number(self.job_id)


def _int_or_none(value: object) -> int | None:
    if value is None:
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def record_from_attributes(job_id: str, attributes: Mapping[str, str]) -> QstatRecord:
    """A :class:`QstatRecord` from flat ``qstat -f`` attributes of either flavour."""
    exit_status = attributes.get("Exit_status", attributes.get("exit_status"))
    index = _int_or_none(attributes.get("array_index"))
    if index is None:
        index = _int_or_none(attributes.get("job_array_id")) if "[]" not in job_id else None
    if index is None:
        index = array_index_of(job_id)
    parent = attributes.get("array", "").strip().lower() == "true" or (
        "[]" in job_id or "job_array_request" in attributes
    )
    return QstatRecord(
        job_id=job_id,
        state=attributes.get("job_state", "").strip(),
        exit_status=_int_or_none(exit_status),
        comment=attributes.get("comment"),
        queue=attributes.get("queue"),
        name=attributes.get("Job_Name"),
        array_parent=parent and index is None,
        array_index=index,
        attributes=dict(attributes),
    )


def _flatten(prefix: str, value: Any, into: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        if prefix == "Variable_List":  # qstat -f prints it as one comma-joined value
            into[prefix] = ",".join(f"{k}={v}" for k, v in value.items())
            return
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, into)
    else:
        into[prefix] = str(value)


def _json_document(text: str) -> dict[str, Any]:
    # stderr lines merged in front (``qstat: 17.vm Job has finished, ...``) are not JSON
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if line.startswith("{"):
            body = "\n".join(lines[number:])
            break
    else:
        raise ParseError(f"qstat -F json printed no JSON object: {text.strip()[:200]!r}")
    try:
        # strict=False: OpenPBS writes control characters (raw newlines) inside strings
        document = json.loads(body, strict=False)
    except json.JSONDecodeError as error:
        raise ParseError(f"qstat -F json printed invalid JSON ({error})") from error
    if not isinstance(document, dict):
        raise ParseError("qstat -F json printed JSON that is not an object")
    return document


def parse_qstat_json(text: str) -> list[QstatRecord]:
    """``qstat [-x] [-t] -f -F json``; a document without ``"Jobs"`` (no job matched) is empty."""
    jobs = _json_document(text).get("Jobs") or {}
    if not isinstance(jobs, Mapping):
        raise ParseError("qstat -F json: 'Jobs' is not an object")
    records = []
    for job_id, body in jobs.items():
        flat: dict[str, str] = {}
        _flatten("", body, flat)
        records.append(record_from_attributes(job_id, flat))
    return records


def qstat_json_header(text: str) -> dict[str, str]:
    """The header fields of ``qstat -F json`` (``pbs_version``, ``pbs_server``, ``timestamp``)."""
    return {k: str(v) for k, v in _json_document(text).items() if not isinstance(v, Mapping)}


_JOB_HEADER = re.compile(r"^Job Id:(\s*)(\S+)\s*$")
#: an attribute line: four spaces (no more), a name, `` = ``, the value
_ATTRIBUTE = re.compile(r"^ {4}([A-Za-z_][A-Za-z0-9_.\-]*) = ?(.*)$")
#: SLURM's Torque-style qstat writes ``Job Id:<TAB>id`` and indents attributes with one TAB (it never wraps)
_TAB_ATTRIBUTE = re.compile(r"^\t([A-Za-z_][A-Za-z0-9_.\-]*) = ?(.*)$")


def _full_text_blocks(text: str) -> Iterator[tuple[str, dict[str, str]]]:
    job_id = ""
    attributes: dict[str, str] = {}
    last: str | None = None
    started = False
    attribute_line = _ATTRIBUTE
    for line in text.splitlines():
        header = _JOB_HEADER.match(line)
        if header:
            if started:
                yield job_id, attributes
            job_id, attributes, last, started = header.group(2), {}, None, True
            attribute_line = _TAB_ATTRIBUTE if header.group(1) == "\t" else _ATTRIBUTE
            continue
        attribute = attribute_line.match(line)
        if attribute:
            last = attribute.group(1)
            attributes[last] = attribute.group(2).rstrip()
            started = True
        elif last is not None:
            if line.startswith("\t"):
                # qstat wraps long values at a fixed width: the pieces join without a separator
                attributes[last] += line[1:].rstrip()
            elif line.startswith("        "):  # the same, from a copy that turned the TAB into spaces
                attributes[last] += line.strip()
            else:
                # a value with a raw newline in it (Torque's sched_hint) or a blank line inside one
                attributes[last] += "\n" + line.rstrip()
    if started:
        yield job_id, attributes


def parse_qstat_full(text: str) -> list[QstatRecord]:
    """``qstat -f`` text (PBS Pro, Torque, Torque-style wrappers); TAB or space continuation lines."""
    records = []
    for job_id, attributes in _full_text_blocks(text):
        cleaned = {key: value.rstrip("\n") for key, value in attributes.items()}
        records.append(record_from_attributes(job_id, cleaned))
    return records


def _xml_flatten(prefix: str, element: ET.Element, into: dict[str, str]) -> None:
    children = list(element)
    if not children:
        into[prefix] = (element.text or "").strip()
        return
    for child in children:
        _xml_flatten(f"{prefix}.{child.tag}" if prefix else child.tag, child, into)


def parse_qstat_xml(text: str) -> list[QstatRecord]:
    """Torque's ``qstat -x`` (``<Data><Job>...</Job></Data>``); nested elements become dotted names."""
    body = text.strip()
    if not body:
        return []
    try:
        root = ET.fromstring(body)
    except ET.ParseError as error:
        raise ParseError(f"qstat -x printed invalid XML ({error})") from error
    records = []
    for job in root.iter("Job"):
        flat: dict[str, str] = {}
        for child in job:
            _xml_flatten(child.tag, child, flat)
        job_id = flat.pop("Job_Id", "")
        if not job_id:
            raise ParseError("qstat -x: a <Job> without <Job_Id>")
        records.append(record_from_attributes(job_id, flat))
    return records


# ---------------------------------------------------------------------------
# errors on stderr
# ---------------------------------------------------------------------------


class ErrorKind(enum.Enum):
    """What a PBS error line on stderr means to the plugin."""

    UNKNOWN_JOB = "unknown job id"
    FINISHED = "job has finished"
    BAD_JOB_ID = "illegally formed job identifier"
    UNAUTHORIZED = "unauthorized request"
    UNKNOWN_QUEUE = "unknown queue"
    UNKNOWN_RESOURCE = "unknown resource"
    EXCEEDS_LIMITS = "exceeds queue resource limits"
    NO_SCRIPT = "script file not found"
    NO_SERVER = "cannot connect to the PBS server"
    USAGE = "usage"
    OTHER = "other"


@attrs.frozen
class PBSErrorLine:
    kind: ErrorKind
    line: str
    job_id: str | None = None


_ERRORS: tuple[tuple[re.Pattern[str], ErrorKind], ...] = (
    (re.compile(r"Unknown Job Id(?: Error)?\s*(?P<id>\S+)?"), ErrorKind.UNKNOWN_JOB),
    (re.compile(r"(?:(?P<id>\S+) )?Job has finished(?:\s+(?P<id2>\S+))?"), ErrorKind.FINISHED),
    (re.compile(r"illegally formed job identifier:?\s*(?P<id>\S+)?"), ErrorKind.BAD_JOB_ID),
    (re.compile(r"Unauthorized Request"), ErrorKind.UNAUTHORIZED),
    (re.compile(r"Unknown queue"), ErrorKind.UNKNOWN_QUEUE),
    (re.compile(r"Unknown resource"), ErrorKind.UNKNOWN_RESOURCE),
    (re.compile(r"exceeds queue resource limits", re.IGNORECASE), ErrorKind.EXCEEDS_LIMITS),
    (re.compile(r"script file:+ No such file"), ErrorKind.NO_SCRIPT),
    (
        re.compile(r"cannot connect to server|Connection refused|No route to host|Cannot connect"),
        ErrorKind.NO_SERVER,
    ),
    (re.compile(r"^\s*usage:", re.IGNORECASE), ErrorKind.USAGE),
)


def classify_errors(stderr: str) -> list[PBSErrorLine]:
    """Each non-empty stderr line with its :class:`ErrorKind` and the job id it names, if any."""
    found = []
    for line in stderr.splitlines():
        if not line.strip():
            continue
        for pattern, kind in _ERRORS:
            match = pattern.search(line)
            if match:
                ids = [v for k, v in match.groupdict().items() if k.startswith("id") and v and is_job_id(v)]
                found.append(PBSErrorLine(kind, line.strip(), ids[0] if ids else None))
                break
        else:
            found.append(PBSErrorLine(ErrorKind.OTHER, line.strip()))
    return found


def gone_job_ids(stderr: str) -> set[str]:
    """Job ids ``qstat``/``qdel`` said are unknown or finished: they left the queue."""
    return {
        e.job_id for e in classify_errors(stderr) if e.kind in {ErrorKind.UNKNOWN_JOB, ErrorKind.FINISHED} and e.job_id
    }


def server_unreachable(stderr: str) -> bool:
    return any(e.kind is ErrorKind.NO_SERVER for e in classify_errors(stderr))


# ---------------------------------------------------------------------------
# server settings, versions
# ---------------------------------------------------------------------------

#: PBS Pro's default ``max_array_size`` (the server attribute is unset until a manager sets it).
DEFAULT_MAX_ARRAY_SIZE = 10000


def parse_server_attributes(text: str) -> dict[str, str]:
    """``qmgr -c 'list server'`` or ``qstat -Bf``: ``name = value`` lines (continuations joined)."""
    attributes: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        match = re.match(r"^\s+([A-Za-z_][A-Za-z0-9_.]*) = ?(.*)$", line)
        if match and not line.startswith("\t"):
            last = match.group(1)
            attributes[last] = match.group(2).strip()
        elif last is not None and line.strip() and line[:1] in {"\t", " "}:
            attributes[last] += line.strip()
    return attributes


def max_array_size(attributes: Mapping[str, str], default: int = DEFAULT_MAX_ARRAY_SIZE) -> int:
    """The server's ``max_array_size`` (subjobs per array), the PBS default when it is not set."""
    value = _int_or_none(attributes.get("max_array_size"))
    return value if value and value > 0 else default


class Flavour(enum.Enum):
    """The two PBS command dialects."""

    PBSPRO = "pbspro"
    TORQUE = "torque"


def detect_flavour(version_output: str) -> Flavour:
    """``qstat --version``: ``pbs_version = 23.06.06`` is PBS Pro/OpenPBS, anything else Torque-style.

    Torque prints ``Version: 6.1.2``; the Torque-style wrappers of slurm-wlm-torque print
    SLURM's version. Both take Torque's options, so both are :attr:`Flavour.TORQUE`.
    """
    if re.search(r"pbs_version\s*=", version_output):
        return Flavour.PBSPRO
    if version_output.strip():
        return Flavour.TORQUE
    raise ParseError("qstat --version printed nothing: cannot tell PBS Pro from Torque")


def pbs_version(version_output: str) -> str | None:
    match = re.search(r"(?:pbs_version\s*=|Version:|slurm)\s*(\S+)", version_output, re.IGNORECASE)
    return match.group(1) if match else None
