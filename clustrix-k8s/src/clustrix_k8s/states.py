"""Kubernetes Job and Pod status -> one clustrix :class:`JobStatus` (pure).

A clustrix job is one Indexed Job or one Job per array task. It is final when every
one of its Jobs has a ``Complete`` or ``Failed`` condition, or when one was deleted.
``DeadlineExceeded`` (the Job's, or a pod's: the kubelet ends a pod at ``time=``) maps to
TIMEOUT, a container ``OOMKilled`` to OUT_OF_MEMORY, and
``BackoffLimitExceeded`` to FAILED (core then raises the call's own exception, which the
last attempt sent back); a pod whose pip step (``image=None``) failed, exit
:data:`PIP_FAILED_EXIT`, to FAILED with a reason naming ``image=`` and the index as the
fix. A pod that waits on an image that cannot be pulled, on a missing Secret or ConfigMap,
or that no node can take, for longer than ``pending_timeout``, makes the job FAILED with
Kubernetes' own message: never poll for ever.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from clustrix.plugin.types import JobState, JobStatus
from clustrix_k8s.bootstrap import final_condition

#: Container waiting reasons that do not resolve by themselves.
STUCK_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)

#: The container's exit code when the pip step (``image=None``) cannot install the job's requirements.
PIP_FAILED_EXIT = 43


def pip_step_failed(message: str) -> str:
    """The reason of a job whose pods could not pip-install its requirements: what happened and the fixes."""
    return (
        f"{message}; the pod's pip step could not install the job's requirements (exit {PIP_FAILED_EXIT}: no "
        "package index reachable from the pod, or one that lacks a pinned version; pip's last words are in the "
        "stderr below). With image=None every pod pip-installs this environment's pinned distributions at start. "
        "Fix: set image= to an image with those packages and cloudpickle baked in (then nothing is installed), "
        "or give the pods an index they can reach (a pip.conf or PIP_INDEX_URL naming your site's mirror), and "
        "narrow what is installed with replicate_distributions=[...]"
    )


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def _terminated(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return [s["state"]["terminated"] for s in statuses if (s.get("state") or {}).get("terminated")]


def oom_killed(pods: Sequence[Mapping[str, Any]]) -> bool:
    return any(t.get("reason") == "OOMKilled" for pod in pods for t in _terminated(pod))


def last_exit_code(pods: Sequence[Mapping[str, Any]]) -> int | None:
    codes = [
        (parse_time(t.get("finishedAt")) or 0.0, int(t["exitCode"]))
        for pod in pods
        for t in _terminated(pod)
        if t.get("exitCode") is not None
    ]
    return max(codes)[1] if codes else None


def stuck_reason(pod: Mapping[str, Any]) -> str | None:
    """Why a pod cannot start (Kubernetes' words), or None when it is starting or started."""
    status = pod.get("status") or {}
    if status.get("phase") not in (None, "Pending"):
        return None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            why = condition.get("message") or condition.get("reason")
            return f"pod {pod['metadata']['name']} cannot be scheduled: {why}"
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_REASONS:
            return f"pod {pod['metadata']['name']}: {waiting['reason']}: {waiting.get('message') or ''}".rstrip(": ")
    return None


def pods_started(pods: Sequence[Mapping[str, Any]]) -> bool:
    """True when every pod has left Pending (running or finished)."""
    return bool(pods) and all((p.get("status") or {}).get("phase") not in (None, "Pending") for p in pods)


def job_status(
    jobs: Sequence[Mapping[str, Any]],
    expected: int,
    pods: Sequence[Mapping[str, Any]] | None,
    *,
    now: float,
    pending_timeout: float,
    pip_step: bool = False,
) -> JobStatus | None:
    """The clustrix status of one job's Kubernetes Jobs; None when the pods are needed to decide.

    ``pip_step``: the pods install the requirements at start, so exit :data:`PIP_FAILED_EXIT` means that failed.
    """
    if len(jobs) < expected:
        missing = expected - len(jobs)
        return JobStatus(state=JobState.CANCELLED, reason=f"{missing} of its {expected} Kubernetes Job(s) were deleted")
    # a Job being deleted (foreground: it stays until its pods are gone) whose killed pod made the job
    # controller mark it failed is cancelled, not failed (seen on a real node: SIGKILL after the grace period)
    deleting = [job for job in jobs if (job.get("metadata") or {}).get("deletionTimestamp")]
    if deleting:
        return JobStatus(
            state=JobState.CANCELLED, reason=f"{len(deleting)} of its {expected} Kubernetes Job(s) were deleted"
        )
    conditions = [final_condition(job) for job in jobs]
    if all(c is not None for c in conditions):
        failed = [c for c in conditions if c is not None and c.get("type") == "Failed"]
        if not failed:
            return JobStatus(state=JobState.COMPLETED, exit_code=0)
        reasons = {str(c.get("reason")) for c in failed}
        message = "; ".join(sorted({f"{c.get('reason')}: {c.get('message')}" for c in failed}))
        if "DeadlineExceeded" in reasons:
            return JobStatus(state=JobState.TIMEOUT, reason=message)
        if pods is None:
            return None
        if any((pod.get("status") or {}).get("reason") == "DeadlineExceeded" for pod in pods):
            # the kubelet ended a pod at its own activeDeadlineSeconds (time=); the Job controller
            # counts that pod's failure against backoffLimit before it looks at the Job's deadline
            return JobStatus(state=JobState.TIMEOUT, reason=f"{message}; a pod ran past time= (DeadlineExceeded)")
        if oom_killed(pods):
            return JobStatus(
                state=JobState.OUT_OF_MEMORY,
                reason=f"{message}; a container was OOMKilled (it used more than memory_limit)",
                exit_code=last_exit_code(pods),
            )
        code = last_exit_code(pods)
        if pip_step and code == PIP_FAILED_EXIT:
            message = pip_step_failed(message)
        return JobStatus(state=JobState.FAILED, reason=message, exit_code=code)
    if pods is not None:
        for pod in pods:
            reason = stuck_reason(pod)
            created = parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
            if reason and created is not None and now - created >= pending_timeout:
                return JobStatus(
                    state=JobState.FAILED,
                    reason=f"{reason} (still so after pending_timeout={pending_timeout:g} s; the Job was deleted)",
                )
    if pods is not None:
        started = any((p.get("status") or {}).get("phase") not in (None, "Pending") for p in pods)
    else:  # without the pods, a Job with an active or finished pod counts as running
        started = any(
            (job.get("status") or {}).get("active") or (job.get("status") or {}).get("succeeded") for job in jobs
        )
    return JobStatus(state=JobState.RUNNING if started else JobState.PENDING)


def needs_pods(jobs: Sequence[Mapping[str, Any]], *, now: float, pending_timeout: float, started: bool) -> bool:
    """Whether deciding this job's status needs a look at its pods this round.

    Only a failed Job (was it OOMKilled?) and a job older than ``pending_timeout`` whose
    pods have not all been seen started need one: the usual round is one list of Jobs.
    """
    if any(
        (c := final_condition(job)) is not None and c.get("type") == "Failed" and c.get("reason") != "DeadlineExceeded"
        for job in jobs
    ):
        return True
    if started or not jobs or all(final_condition(job) for job in jobs):
        return False
    created = min(parse_time(job["metadata"].get("creationTimestamp")) or now for job in jobs)
    return now - created >= pending_timeout
