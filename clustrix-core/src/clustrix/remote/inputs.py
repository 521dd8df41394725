"""Upstream results as arguments, seen from the client: the placeholders it sends and the errors it reads back.

A future passed as an argument travels as a placeholder (:func:`placeholder`); the runner
(:func:`clustrix.remote.runner.read_upstream`) reads the upstream call's outcome file on the cluster and
puts the value in its place. When the input failed, the runner writes the call's outcome with an
``upstream`` part; :func:`upstream_failed` turns it into a :class:`clustrix.errors.DependencyError`
whose ``__cause__`` is the upstream's own exception.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

from clustrix.errors import DependencyError, exception_from_outcome
from clustrix.plugin.types import Outcome
from clustrix.remote.runner import UPSTREAM


def placeholder(
    *, job_id: str, job_dir: str, index: int, tasks: int, held: bool, wait: float | None = None
) -> dict[str, Any]:
    """What the runner replaces by the value of call ``index`` of the job in ``job_dir`` (its ``read_upstream``).

    ``held``: the scheduler starts the dependant only after the upstream ended; else the runner waits
    for the upstream on the cluster, at most ``wait`` seconds when given.
    """
    ref = {"job": job_id, "dir": job_dir, "index": index, "tasks": tasks, "held": held, "wait": wait}
    return {UPSTREAM: ref}


def upstream_failed(upstream: dict[str, Any], decode: Callable[[bytes], Outcome]) -> Outcome:
    """The outcome of a call that never ran because its input failed: a DependencyError naming the input."""
    job_id, index = str(upstream.get("job")), int(upstream.get("index", -1))
    record = upstream.get("record")
    cause = exception_from_outcome(decode(pickle.dumps(record)), job_id=job_id) if record else None
    what = "failed" if record else "wrote no result (it was cancelled, killed or lost)"
    error = DependencyError(
        f"this call did not run: its input, call {index} of job {job_id}, {what}"
        + (f": {type(cause).__name__}: {cause}" if cause is not None and record else ""),
        job_id=job_id,
        upstream_job_id=job_id,
        upstream_call=index,
    )
    error.__cause__ = cause
    return Outcome(ok=False, exception=error, error_type="clustrix.errors.DependencyError", error_message=str(error))
