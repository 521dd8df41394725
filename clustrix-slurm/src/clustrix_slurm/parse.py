"""Pure parsers for what SLURM's commands print (``sbatch``, ``squeue``, ``sacct``, ``scontrol``).

The argv that produce these texts live next to their parsers, so format and parser
cannot drift apart. Captured real output is kept under ``tests/slurm/fixtures``.
"""

from __future__ import annotations

from collections.abc import Iterable

from clustrix.batch.dialect import TaskRecord, expand_task_ids
from clustrix.errors import ParseError

#: ``squeue`` columns: array job id (the job id for plain jobs), array task id(s), state, reason.
SQUEUE_FORMAT = "%F|%K|%T|%r"
#: ``sacct`` columns, in ``--parsable2`` form.
SACCT_FIELDS = ("JobID", "State", "ExitCode", "Reason")


def squeue_argv(native_ids: Iterable[str]) -> list[str]:
    """One ``squeue`` for many jobs, finished ones included (they stay for ``MinJobAge``)."""
    return ["squeue", "--noheader", "--states=all", f"--jobs={','.join(native_ids)}", f"--format={SQUEUE_FORMAT}"]


def sacct_argv(native_ids: Iterable[str]) -> list[str]:
    """One ``sacct`` for many jobs (allocations only, no steps)."""
    return [
        "sacct",
        "--noheader",
        "--parsable2",
        "--allocations",
        f"--jobs={','.join(native_ids)}",
        f"--format={','.join(SACCT_FIELDS)}",
    ]


def parse_sbatch_parsable(text: str) -> str:
    """``sbatch --parsable`` prints ``jobid`` or ``jobid;cluster``; return the job id."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ParseError("sbatch --parsable printed nothing")
    job_id = lines[-1].split(";", 1)[0]
    if not job_id.isdigit():
        raise ParseError(f"sbatch --parsable printed {text.strip()!r}, not a job id")
    return job_id


def split_job_id(text: str) -> tuple[str, tuple[int, ...] | None]:
    """``"123"`` -> ("123", None); ``"123_4"`` -> ("123", (4,)); ``"123_[5-9%2]"`` -> ("123", (5..9))."""
    job, sep, task = text.strip().partition("_")
    if not job.isdigit():
        raise ParseError(f"{text!r} is not a SLURM job id")
    if not sep:
        return job, None
    return job, expand_task_ids(task)


def _reason(text: str) -> str | None:
    text = text.strip()
    return None if text in {"", "None", "(null)"} else text


def parse_squeue(text: str) -> list[TaskRecord]:
    """Parse ``squeue --noheader --format=%F|%K|%T|%r`` output."""
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", 3)
        if len(parts) != 4:
            raise ParseError(f"unexpected squeue line {line!r}")
        job, task, state, reason = parts
        job = job.strip()
        if not job.isdigit():
            raise ParseError(f"unexpected squeue job id in {line!r}")
        task = task.strip()
        tasks = None if task in {"N/A", ""} else expand_task_ids(task)
        records.append(TaskRecord(job, tasks, state.strip(), _reason(reason)))
    return records


def parse_exit_code(text: str) -> int | None:
    """``sacct``'s ``code:signal``: the code, or 128+signal when a signal ended the job."""
    text = text.strip()
    if not text:
        return None
    code, _, signal = text.partition(":")
    try:
        if signal and int(signal):
            return 128 + int(signal)
        return int(code)
    except ValueError:
        return None


def parse_sacct(text: str) -> list[TaskRecord]:
    """Parse ``sacct --noheader --parsable2 --format=JobID,State,ExitCode,Reason`` (steps are skipped)."""
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) < 3:
            raise ParseError(f"unexpected sacct line {line!r}")
        job_text, state, exit_text = parts[0], parts[1], parts[2]
        if "." in job_text:  # a step such as 123.batch or 123_4.extern
            continue
        job, tasks = split_job_id(job_text)
        reason = _reason(parts[3]) if len(parts) > 3 else None
        records.append(TaskRecord(job, tasks, state.strip(), reason, parse_exit_code(exit_text)))
    return records


def parse_scontrol_config(text: str) -> dict[str, str]:
    """``scontrol show config``'s ``Key = value`` lines as a dict."""
    config = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            config[key.strip()] = value.strip()
    return config


def max_array_size(config: dict[str, str], default: int = 1001) -> int:
    """``MaxArraySize``: array task ids must stay below it."""
    try:
        return int(config.get("MaxArraySize", default))
    except ValueError:
        return default


def accounting_enabled(config: dict[str, str]) -> bool:
    """True when ``sacct`` can answer (accounting goes to slurmdbd)."""
    return config.get("AccountingStorageType", "accounting_storage/none") not in {
        "accounting_storage/none",
        "(null)",
        "",
    }
