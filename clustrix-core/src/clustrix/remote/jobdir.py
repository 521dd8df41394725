"""Job directories on the machine that runs the job: planning tasks, encoding the payload, decoding outcomes.

Every plugin that runs :mod:`clustrix.remote.runner` remotely (ssh, slurm, pbs, sge, kubernetes)
shares these functions, so the layout documented in :mod:`clustrix.remote.runner` lives in one
place. (The batch engine stages and reads job directories with one shell command each:
:mod:`clustrix.batch.shell`.)
"""

from __future__ import annotations

import pickle
import posixpath
from collections.abc import Sequence
from typing import Any

from clustrix.plugin.transport import Transport
from clustrix.plugin.types import JobHandle, JobSpec, Outcome
from clustrix.remote import runner
from clustrix.remote.environment.interpreter import RUNNER_MODULES
from clustrix.remote.inputs import upstream_failed
from clustrix.remote.localcode.detection import dumps_recording
from clustrix.remote.localcode.plan import CodePlan, plan_code


def plan_tasks(size: int, max_tasks: int | None = None) -> list[list[int]]:
    """Split call indices ``0..size-1`` into at most ``max_tasks`` contiguous, balanced tasks."""
    if size <= 0:
        return []
    n_tasks = size if not max_tasks else max(1, min(size, max_tasks))
    base, rest = divmod(size, n_tasks)
    tasks, start = [], 0
    for task in range(n_tasks):
        count = base + (1 if task < rest else 0)
        tasks.append(list(range(start, start + count)))
        start += count
    return tasks


def _payload(spec: JobSpec, tasks: Sequence[Sequence[int]], claim: bool) -> dict[str, Any]:
    payload = {
        "func": spec.func,
        "arguments": list(spec.arguments),
        "tasks": [list(t) for t in tasks],
        "claim": claim,
        "retries": int(spec.config.get("retries") or 0),
    }
    return {**payload, "inputs": True} if spec.dependencies else payload


def encode_payload_and_code(
    spec: JobSpec,
    tasks: Sequence[Sequence[int]],
    *,
    claim: bool = False,
    needs: Sequence[str] = RUNNER_MODULES,
) -> tuple[bytes, CodePlan]:
    """The payload's bytes and the user's local code it needs (pickled once, for every call of the job).

    ``needs`` are the modules the job's runner imports besides the payload's (shipped too
    when they are local, e.g. an editable clustrix-core). Raises
    :class:`clustrix.errors.LocalCodeError` for code that cannot travel; send the plan
    with :func:`clustrix.remote.localcode.shipping.ship` and put its ``prelude`` in the job's shell.
    """
    data, referenced = dumps_recording(_payload(spec, tasks, claim))
    return data, plan_code(referenced, spec.config, needs=needs)


def decode_outcome(data: bytes) -> Outcome:
    """Turn an outcome file's bytes into an :class:`Outcome` (see :mod:`clustrix.remote.runner`).

    Bytes that are no outcome record make that call's failed outcome, so they are
    unpickled once only (a fetch that raised would be retried, unpickling them again).
    """
    try:
        record = pickle.loads(data)
        if not isinstance(record, dict) or "ok" not in record:
            raise ValueError(f"found {type(record).__name__}, not an outcome record")
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file fails its call, once
        return Outcome(
            ok=False,
            error_type=f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins."),
            error_message=f"the outcome file could not be read: {type(exc).__name__}: {exc}",
        )
    if record.get("upstream") is not None:
        return upstream_failed(record["upstream"], decode_outcome)
    if record["ok"]:
        try:
            value = pickle.loads(record["value"])
        except Exception as exc:  # noqa: BLE001 - e.g. the value's class is not importable here
            return Outcome(
                ok=False,
                error_type=runner.type_name(exc).removeprefix("builtins."),
                error_message=f"the call returned a value that cannot be unpickled here: {type(exc).__name__}: {exc}",
            )
        return Outcome(ok=True, value=value)
    exception = None
    if record.get("exception") is not None:
        try:
            exception = pickle.loads(record["exception"])
        except Exception:  # noqa: BLE001 - an exception class missing here degrades to JobError
            exception = None
    return Outcome(
        ok=False,
        exception=exception if isinstance(exception, BaseException) else None,
        error_type=record.get("type"),
        error_message=record.get("message"),
        traceback=record.get("traceback"),
    )


def remove_job_dir(transport: Transport, handle: JobHandle) -> bool:
    """``cleanup_on_success``: delete the job's directory through ``transport``; True once it is gone.

    Only a directory named after the job id is removed, never a parent; a job without one
    is left alone (False).
    """
    job_dir = handle.job_dir
    if not job_dir or posixpath.basename(job_dir.rstrip("/")) != handle.job_id:
        return False
    transport.run(["rm", "-rf", "--", job_dir], timeout=120, check=True)
    return True
