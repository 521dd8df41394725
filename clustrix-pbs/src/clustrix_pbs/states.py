"""PBS job states and exit statuses, mapped explicitly onto :class:`clustrix.plugin.types.JobState`.

A PBS job that ended is in state ``F`` (PBS Pro: finished, ``X`` for an expired
subjob) or ``C`` (Torque: completed) whatever happened to it: what happened is in
``Exit_status`` (0, the script's own code, 256+signal when PBS killed it, or a
negative ``JOB_EXEC_*`` code such as -29 "walltime exceeded").
"""

from __future__ import annotations

import re
import signal

import attrs

from clustrix.plugin.types import JobState
from clustrix_pbs.parse import Flavour, QstatRecord

#: Job states of both flavours. ``F``/``X``/``C`` are final; their meaning comes from the exit status.
NATIVE_STATES: dict[str, JobState] = {
    "Q": JobState.PENDING,  # queued
    "H": JobState.PENDING,  # held
    "W": JobState.PENDING,  # waiting for its start time
    "T": JobState.PENDING,  # in transit
    "M": JobState.PENDING,  # moved to another server
    "R": JobState.RUNNING,
    "B": JobState.RUNNING,  # PBS Pro: an array job that has begun
    "E": JobState.RUNNING,  # exiting: the script ended, files are being copied
    "S": JobState.RUNNING,  # suspended by the server
    "U": JobState.RUNNING,  # suspended: the workstation is busy
}
FINAL_STATES = frozenset({"F", "X", "C"})

#: PBS Pro / OpenPBS ``JOB_EXEC_*`` codes that say why MOM ended a job (src/include/job.h).
PBSPRO_EXEC_CODES: dict[int, tuple[JobState, str]] = {
    -29: (JobState.TIMEOUT, "the job exceeded its walltime"),
    -28: (JobState.TIMEOUT, "the job exceeded its CPU time (cput)"),
    -27: (JobState.OUT_OF_MEMORY, "the job exceeded its memory (mem)"),
    -26: (JobState.OUT_OF_MEMORY, "the job exceeded its virtual memory (vmem)"),
    -25: (JobState.FAILED, "the job used more CPUs than it asked for (ncpus sum)"),
    -24: (JobState.FAILED, "the job used more CPUs than it asked for (ncpus burst)"),
    -10: (JobState.FAILED, "PBS could not run the job as its user (invalid uid/gid)"),
    -1: (JobState.NODE_FAIL, "PBS could not start the job (before its files were set up)"),
    -2: (JobState.NODE_FAIL, "PBS could not start the job (after its files were set up)"),
    -4: (JobState.NODE_FAIL, "the job was aborted when MOM started"),
    -20: (JobState.NODE_FAIL, "the connection to the job's first node failed"),
}

#: Torque ``JOB_EXEC_*`` codes (Torque 6 administrator guide, "Job exit status").
TORQUE_EXEC_CODES: dict[int, tuple[JobState, str]] = {
    -11: (JobState.TIMEOUT, "the job exceeded its walltime"),
    -10: (JobState.OUT_OF_MEMORY, "the job exceeded its memory limit"),
    -12: (JobState.TIMEOUT, "the job exceeded its CPU time (cput)"),
    -1: (JobState.NODE_FAIL, "PBS could not start the job (before its files were set up)"),
    -2: (JobState.NODE_FAIL, "PBS could not start the job (after its files were set up)"),
    -4: (JobState.NODE_FAIL, "the job was aborted when MOM started"),
}

#: Exit status of a job PBS killed with a signal: 256 + the signal number (271 after qdel: SIGTERM).
SIGNAL_OFFSET = 256

#: The comment of a job the scheduler will never start (``qsub`` accepts impossible requests).
NEVER_RUN = re.compile(r"\bCan Never Run\b", re.IGNORECASE)
#: ... unless no node reports the resource at all (``T: 0``): a node down, or its MOM not yet back after
#: a server restart. That is a queue waiting for nodes, as on every scheduler, not a request too big.
NO_NODE_REPORTS = re.compile(r"\bT:\s*0\)")


def never_run_reason(comment: str | None) -> str | None:
    """The comment, when it says the scheduler can never run the job as submitted."""
    if comment and NEVER_RUN.search(comment) and not NO_NODE_REPORTS.search(comment):
        return comment
    return None


@attrs.frozen
class Verdict:
    """What a PBS record means to clustrix: a state and, for an ending that is not success, why."""

    state: JobState
    reason: str | None = None
    exit_code: int | None = None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exit_status_verdict(exit_status: int | None, flavour: Flavour = Flavour.PBSPRO) -> Verdict:
    """The final state for a job that PBS says has ended with ``exit_status``.

    No exit status means the job was deleted before it ran; 256+N means PBS ended it
    with signal N, which is what ``qdel`` (SIGTERM, then SIGKILL after ``kill_delay``) does.
    """
    if exit_status is None:
        if flavour is Flavour.TORQUE:
            # SLURM's Torque-style qstat shows C without exit_status: the job's own files must tell
            return Verdict(JobState.COMPLETED, "Torque reported no exit status")
        return Verdict(JobState.CANCELLED, "the job was deleted before it started")
    if exit_status == 0:
        return Verdict(JobState.COMPLETED, None, 0)
    codes = PBSPRO_EXEC_CODES if flavour is Flavour.PBSPRO else TORQUE_EXEC_CODES
    if exit_status in codes:
        state, text = codes[exit_status]
        return Verdict(state, f"{text} (Exit_status {exit_status})", exit_status)
    if exit_status > SIGNAL_OFFSET:
        number = exit_status - SIGNAL_OFFSET
        if number in (signal.SIGTERM, signal.SIGKILL):
            return Verdict(JobState.CANCELLED, f"PBS ended the job with {_signal_name(number)} (qdel)", exit_status)
        return Verdict(JobState.FAILED, f"PBS ended the job with {_signal_name(number)}", exit_status)
    if exit_status < 0:
        return Verdict(JobState.FAILED, f"PBS could not run the job (Exit_status {exit_status})", exit_status)
    return Verdict(JobState.FAILED, f"the job script exited with code {exit_status}", exit_status)


def never_runs(record: QstatRecord) -> bool:
    """A queued job whose comment says the scheduler can never run it as submitted."""
    return NATIVE_STATES.get(record.state) is JobState.PENDING and never_run_reason(record.comment) is not None


def verdict(record: QstatRecord, flavour: Flavour = Flavour.PBSPRO) -> Verdict:
    """The clustrix state of one job or subjob record (``UNKNOWN`` for a state letter PBS added later)."""
    if record.state in FINAL_STATES:
        return exit_status_verdict(record.exit_status, flavour)
    if never_runs(record):
        return Verdict(JobState.FAILED, f"PBS will never run this job: {record.comment}")
    state = NATIVE_STATES.get(record.state, JobState.UNKNOWN)
    return Verdict(state, record.comment if state is JobState.PENDING else None)
