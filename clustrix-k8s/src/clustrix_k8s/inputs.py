"""Futures as arguments on Kubernetes: the dependant's Jobs are created at once, and their pods wait for their inputs.

Kubernetes has no dependencies between Jobs, so the waiting happens on the cluster, never in the
client: the dependant's ``meta.json`` (in its payload Secret) lists each upstream job with its result
key and, per array task, the upstream calls that task's calls take as arguments; the pod
(:func:`clustrix_k8s.bootstrap.fetch_inputs`) reads those results from the upstream's result
ConfigMaps (checking their signatures as the submitter does) into a private folder of its own,
then runs the calls, whose runner reads them as on any cluster. A pod waits until its inputs are
sent or their Jobs have ended (or are gone), so a dependant's time limit must cover the wait:
its ``activeDeadlineSeconds`` is its own ``time`` plus the longest deadline of its inputs (none when
an input has none). Both jobs must live in one namespace on one API server; otherwise the client
chains them (:mod:`clustrix.api.dependencies`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clustrix.plugin.types import Dependency, JobHandle
from clustrix_k8s.bootstrap import INPUTS


def input_dir(handle: JobHandle, server: str, namespace: str) -> str | None:
    """The folder in a dependant pod (on ``server``, in ``namespace``) that receives ``handle``'s outcomes; None
    when its pods cannot read them (another server or namespace, or a handle without a result key)."""
    data = handle.data
    if handle.host != server or data.get("namespace") != namespace or not data.get("key"):
        return None
    return f"{INPUTS}/{handle.job_id}"


def after(dependencies: Sequence[Dependency], tasks: Sequence[Sequence[int]]) -> list[dict[str, Any]]:
    """``meta.json``'s ``after``: each upstream job, its folder and key, and per task the upstream calls it reads."""
    task_of = {call: t for t, calls in enumerate(tasks) for call in calls}
    entries = []
    for dependency in dependencies:
        assert dependency.handle is not None, "a Kubernetes dependency carries its upstream's handle"
        needs: list[set[int]] = [set() for _ in tasks]
        for call, upstream_call in dependency.calls:
            needs[task_of[call]].add(upstream_call)
        entries.append(
            {
                "job": dependency.job_id,
                "dir": dependency.job_dir,
                "key": dependency.handle.data["key"],
                "needs": [sorted(n) for n in needs],
            }
        )
    return entries


def deadline(own: int | None, dependencies: Sequence[Dependency]) -> int | None:
    """A dependant's ``activeDeadlineSeconds``: its own plus the longest of its inputs' (None if any is unbounded)."""
    if own is None or not dependencies:
        return own
    theirs = [d.handle.data.get("deadline") if d.handle is not None else None for d in dependencies]
    if any(t is None for t in theirs):
        return None
    return own + max(int(t) for t in theirs if t is not None)
