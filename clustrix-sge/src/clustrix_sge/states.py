"""Grid Engine's job states and accounting records, mapped explicitly onto :class:`clustrix.plugin.types.JobState`.

``qstat`` prints a state as letters: ``qw`` (queued, waiting), ``hqw`` (held), ``r``
(running), ``t`` (being transferred to the execution host), ``Rr``/``Rq`` (restarted:
rescheduled and running/queued again), ``s`` (suspended by ``qmod -sj``), ``S`` (its
queue is suspended), ``T`` (suspended by a queue's suspend threshold), ``dr``/``dt``/``dqw``
(being deleted), ``Eqw`` (an error kept the job from starting: it stays in the queue until
someone clears or deletes it). A job that left ``qstat`` is read from ``qacct``, whose
``failed`` and ``exit_status`` fields say how it ended; :func:`classify` turns one record
into one of the history words of :data:`HISTORY_STATES`.
"""

from __future__ import annotations

from clustrix.plugin.types import JobState
from clustrix.remote.runner import REQUEUED_EXIT
from clustrix_sge.parse import AccountingRecord, memory_bytes, seconds

#: Letter combinations ``qstat`` prints, each with its meaning (upper-cased, as the engine normalises words).
QSTAT_STATES: dict[str, JobState] = {
    "QW": JobState.PENDING,
    "HQW": JobState.PENDING,
    "HRWQ": JobState.PENDING,
    "RQ": JobState.PENDING,
    "R": JobState.RUNNING,
    "T": JobState.RUNNING,
    "RR": JobState.RUNNING,
    "RT": JobState.RUNNING,
    "HR": JobState.RUNNING,
    "S": JobState.RUNNING,
    "RS": JobState.RUNNING,
    # qdel'd: the job ends (after the -notify warning, the queue's notify time) and never runs again
    "DR": JobState.CANCELLED,
    "DT": JobState.CANCELLED,
    "DS": JobState.CANCELLED,
    "DRR": JobState.CANCELLED,
    "DQW": JobState.CANCELLED,
    "DHQW": JobState.CANCELLED,
    "EQW": JobState.PENDING,
    "EHQW": JobState.PENDING,
}

#: The words :func:`classify` gives a finished job's accounting record.
HISTORY_STATES: dict[str, JobState] = {
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "TIMEOUT": JobState.TIMEOUT,
    "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY,
    "CANCELLED": JobState.CANCELLED,
    # a run that ended in rescheduling (qmod -rj, exit 99): the task is queued again
    "RESCHEDULED": JobState.PENDING,
}

#: Every word :meth:`clustrix_sge.dialect.SGEDialect.to_job_state` knows without reading letters.
NATIVE_STATES: dict[str, JobState] = {**QSTAT_STATES, **HISTORY_STATES}

#: ``failed`` codes of qacct that matter here (``sge_shepherd``'s failure codes).
FAILED_LIMIT = 37  # "qmaster enforced h_rt, h_cpu, or h_vmem limit"
FAILED_RESCHEDULED = 25  # "rescheduling"
FAILED_AFTER_JOB = 100  # "assumedly after job": the job was killed (qdel) once running
#: A job killed by SIGKILL: exit status 128 + 9.
KILLED = 137
#: A memory overrun is "near the limit": the job's peak virtual memory reached this share of it.
NEAR_LIMIT = 0.9

#: Words for the letters of a state, for reasons a user reads.
_LETTERS = {
    "h": "held (release it with qrls)",
    "s": "suspended (qmod -usj resumes it)",
    "S": "suspended: its queue is suspended",
    "T": "suspended: its queue passed a suspend threshold",
    "d": "deleted (qdel)",
    "t": "being transferred to the execution host",
    "R": "restarted (rescheduled)",
    "E": "in an error state",
}


def letters_state(code: str) -> JobState:
    """A letter combination not listed in :data:`QSTAT_STATES`, read letter by letter."""
    if "d" in code:
        return JobState.CANCELLED
    if "E" in code or "q" in code or "w" in code:
        return JobState.PENDING
    if any(letter in code for letter in "rtsST"):
        return JobState.RUNNING
    return JobState.UNKNOWN


def to_job_state(code: str) -> JobState:
    """Map a qstat state or a history word; an unknown word is ``UNKNOWN``."""
    word = code.strip()
    if not word:
        return JobState.UNKNOWN
    known = NATIVE_STATES.get(word.upper())
    if known is not None:
        return known
    return letters_state(word) if word.isalpha() and len(word) <= 6 else JobState.UNKNOWN


def explain_letters(code: str) -> str | None:
    """What the letters of a qstat state say beyond running/pending (held, suspended, ...), or None."""
    words = [meaning for letter, meaning in _LETTERS.items() if letter in code]
    return "; ".join(words) or None


def memory_limit(record: AccountingRecord) -> int | None:
    """The job's memory limit in bytes: ``h_vmem`` per slot times the slots (as the execd enforces it)."""
    per_slot = record.limits.get("h_vmem")
    value = memory_bytes(per_slot) if per_slot else None
    return None if value is None else value * max(1, record.slots)


def near_memory_limit(record: AccountingRecord) -> bool:
    limit = memory_limit(record)
    return limit is not None and record.maxvmem is not None and record.maxvmem >= NEAR_LIMIT * limit


def over_time_limit(record: AccountingRecord) -> bool:
    limit = seconds(record.limits["h_rt"]) if "h_rt" in record.limits else None
    return limit is not None and record.wallclock is not None and record.wallclock >= limit


def classify(record: AccountingRecord) -> tuple[str, str | None]:
    """One accounting record as a history word of :data:`HISTORY_STATES` and a reason in words.

    - ``failed 0``, exit 0: ``COMPLETED``.
    - ``failed 37`` (the limit kill) is ``OUT_OF_MEMORY`` when the job's peak virtual memory
      reached its ``h_vmem`` (times slots), else ``TIMEOUT`` when its wall clock reached ``h_rt``,
      else ``FAILED`` with Grid Engine's words (an ``h_cpu`` kill, say).
    - ``failed 100`` with exit status 137: killed once running, which is what ``qdel`` does:
      ``CANCELLED``.
    - ``failed 25``: the run ended in rescheduling; the task is queued again (``RESCHEDULED``).
    - ``failed 0`` with the runner's requeue exit code (75) and no rescheduling: ``qdel`` of a
      ``-notify`` job, whose SIGUSR2 made the runner checkpoint first: ``CANCELLED``.
    - any other failure, or a non-zero exit: ``FAILED``, or ``OUT_OF_MEMORY`` when the job's
      peak virtual memory reached ``h_vmem``.
    """
    detail = _detail(record)
    if record.failed == FAILED_RESCHEDULED:
        return "RESCHEDULED", detail
    if record.failed == FAILED_LIMIT:
        if near_memory_limit(record):
            return "OUT_OF_MEMORY", f"killed over its h_vmem limit ({detail})"
        if over_time_limit(record):
            return "TIMEOUT", f"killed at its h_rt limit ({detail})"
        return "FAILED", detail
    if record.failed == FAILED_AFTER_JOB and record.exit_status == KILLED:
        return "CANCELLED", f"deleted while running ({detail})"
    if record.failed == 0 and record.exit_status == REQUEUED_EXIT:
        # with -notify, qdel sends SIGUSR2 first: the runner checkpointed and asked for a requeue,
        # but the deletion went on (qmod -rj does not revive a job being deleted)
        return "CANCELLED", f"deleted while its runner checkpointed ({detail})"
    if record.failed == 0 and record.exit_status == 0:
        return "COMPLETED", None
    if near_memory_limit(record):
        return "OUT_OF_MEMORY", f"ended at its h_vmem limit ({detail})"
    return "FAILED", detail


def _detail(record: AccountingRecord) -> str:
    parts = [f"qacct: failed {record.failed}" + (f" ({record.failed_text})" if record.failed_text else "")]
    if record.exit_status is not None:
        parts.append(f"exit_status {record.exit_status}")
    if record.wallclock is not None:
        parts.append(
            f"wallclock {record.wallclock} s" + (f" of h_rt {record.limits['h_rt']}" if "h_rt" in record.limits else "")
        )
    if record.maxvmem is not None and "h_vmem" in record.limits:
        parts.append(
            f"maxvmem {record.maxvmem / 1024**2:.1f} MiB of h_vmem {record.limits['h_vmem']} x {record.slots} slot(s)"
        )
    return ", ".join(parts)
