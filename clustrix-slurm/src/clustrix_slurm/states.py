"""SLURM's job states and pending reasons, mapped explicitly onto :class:`clustrix.plugin.types.JobState`."""

from __future__ import annotations

from clustrix.plugin.types import JobState

#: Every state ``squeue``/``sacct`` print (long and compact forms) and what it means to clustrix.
NATIVE_STATES: dict[str, JobState] = {
    "PENDING": JobState.PENDING,
    "PD": JobState.PENDING,
    "CONFIGURING": JobState.PENDING,
    "CF": JobState.PENDING,
    "REQUEUED": JobState.PENDING,
    "RQ": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING,
    "RH": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "RF": JobState.PENDING,
    "RESV_DEL_HOLD": JobState.PENDING,
    "RD": JobState.PENDING,
    "RESIZING": JobState.RUNNING,
    "RS": JobState.RUNNING,
    "RUNNING": JobState.RUNNING,
    "R": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "CG": JobState.RUNNING,
    "SUSPENDED": JobState.RUNNING,
    "S": JobState.RUNNING,
    "STOPPED": JobState.RUNNING,
    "ST": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "SI": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "SO": JobState.RUNNING,
    "PREEMPTED": JobState.PREEMPTED,
    "PR": JobState.PREEMPTED,
    "COMPLETED": JobState.COMPLETED,
    "CD": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "F": JobState.FAILED,
    "BOOT_FAIL": JobState.NODE_FAIL,
    "BF": JobState.NODE_FAIL,
    "NODE_FAIL": JobState.NODE_FAIL,
    "NF": JobState.NODE_FAIL,
    "DEADLINE": JobState.TIMEOUT,
    "DL": JobState.TIMEOUT,
    "TIMEOUT": JobState.TIMEOUT,
    "TO": JobState.TIMEOUT,
    "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY,
    "OOM": JobState.OUT_OF_MEMORY,
    "CANCELLED": JobState.CANCELLED,
    "CA": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
    "RV": JobState.CANCELLED,
    "SPECIAL_EXIT": JobState.FAILED,
    "SE": JobState.FAILED,
}

#: Pending reasons that mean "this job will never start as submitted": report FAILED at once.
#: ``ReqNodeNotAvail`` is left out on purpose: a drained or rebooting node comes back.
NEVER_RUNNABLE_REASONS: frozenset[str] = frozenset(
    {
        "PartitionTimeLimit",
        "PartitionNodeLimit",
        "PartitionConfig",
        "BadConstraints",
        "InvalidAccount",
        "InvalidQOS",
        "QOSMaxWallDurationPerJobLimit",
        "QOSMaxCpuPerJobLimit",
        "QOSMaxMemoryPerJob",
        "QOSMaxNodePerJobLimit",
        "QOSMaxGRESPerJob",
        "AccountNotAllowed",
        "QOSNotAllowed",
        "PartitionInactive",
        "DependencyNeverSatisfied",
        "InactiveLimit",
        "FrontEndDown",
        "JobLaunchFailure",
        "NonZeroExitCode",
        "SystemFailure",
    }
)

#: What a never-runnable reason means, in words a user can act on.
REASON_TEXT: dict[str, str] = {
    "PartitionTimeLimit": "the requested time exceeds the partition's MaxTime",
    "PartitionNodeLimit": "the requested node count is outside the partition's limits",
    "PartitionConfig": "the request does not fit the partition's configuration",
    "BadConstraints": "no node can satisfy the requested constraints",
    "InvalidAccount": "the account is not valid",
    "InvalidQOS": "the QOS is not valid",
    "AccountNotAllowed": "the account may not use this partition",
    "QOSNotAllowed": "the QOS may not use this partition",
    "PartitionInactive": "the partition is inactive",
    "DependencyNeverSatisfied": "a dependency can never be satisfied",
}


def never_runnable(reason: str | None) -> bool:
    """True when a pending job's reason says it can never start as submitted."""
    return reason is not None and reason_word(reason) in NEVER_RUNNABLE_REASONS


def reason_word(reason: str) -> str:
    """``"ReqNodeNotAvail, UnavailableNodes:vm"`` -> ``ReqNodeNotAvail``."""
    return reason.strip().split(",", 1)[0].split(" ", 1)[0].strip("()")


def explain_reason(reason: str) -> str:
    """SLURM's reason, followed by what it means when clustrix knows."""
    meaning = REASON_TEXT.get(reason_word(reason))
    return f"{reason}: {meaning}" if meaning else reason
