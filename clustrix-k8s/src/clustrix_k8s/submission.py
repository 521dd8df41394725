"""What a Kubernetes submission creates, worked out before anything is sent (pure but for reading the code).

:func:`prepare` checks a job's options, plans its tasks, makes its result key, packs its calls and
local code into payload Secrets (refused when too large) and, for a job that takes other jobs'
results as arguments, says what its pods wait for (:mod:`clustrix_k8s.inputs`);
:func:`job_manifests` renders its Jobs. A real submit (:mod:`clustrix_k8s.scheduler`) and a dry
run both start here, so a dry run shows what a submit creates.
"""

from __future__ import annotations

import base64
import inspect
import secrets as secrets_module
from collections.abc import Mapping
from typing import Any

import attrs

from clustrix.batch.submit import tasks_for
from clustrix.plugin.types import JobSpec
from clustrix.remote import jobdir, runner
from clustrix.remote.localcode.plan import CodePlan
from clustrix.remote.localcode.units import archive
from clustrix_k8s import bootstrap, inputs, manifests
from clustrix_k8s.options import JobOptions, job_options

#: Array tasks (pods) per map unless ``max_parallel_jobs`` or ``calls_per_task`` say otherwise.
MAX_TASKS = 10


def _source(module: Any) -> str:
    return inspect.getsource(module)


def job_manifests(
    spec: JobSpec, options: JobOptions, n_tasks: int, n_chunks: int, *, indexed: bool
) -> list[dict[str, Any]]:
    """The Job manifests of ``spec``: one Indexed Job, or one Job per task; what submit creates and a dry run shows."""
    prefix = manifests.prefix(spec.job_id)
    if indexed or n_tasks == 1:
        return [
            manifests.job_manifest(
                spec.job_id,
                prefix,
                options,
                n_chunks,
                n_tasks=n_tasks,
                task=None if indexed else 0,
                indexed=indexed,
                parallelism=spec.config.get("max_parallel_jobs"),
                function_name=spec.name,
            )
        ]
    return [
        manifests.job_manifest(
            spec.job_id,
            f"{prefix}-t{task}",
            options,
            n_chunks,
            n_tasks=1,
            task=task,
            indexed=False,
            function_name=spec.name,
        )
        for task in range(n_tasks)
    ]


def redacted(secret: Mapping[str, Any]) -> dict[str, Any]:
    """A Secret manifest with every value replaced by its size: a dry run never prints payloads or keys."""
    data = secret.get("data") or {}
    sizes = {name: f"<{len(base64.b64decode(value))} bytes, not shown>" for name, value in data.items()}
    return {**secret, "data": sizes}


def prepare(
    spec: JobSpec, default_namespace: str
) -> tuple[JobOptions, list[list[int]], bytes, list[dict[str, Any]], CodePlan, bytes]:
    """Validate ``spec``: options, tasks, result key, payload Secrets (too large: refused), code plan, archive."""
    config = spec.config
    options = job_options(config, spec.resources, spec.environment or {}, default_namespace=default_namespace)
    if spec.dependencies:  # its pods wait for their inputs first: the deadline covers the wait
        options = attrs.evolve(
            options, active_deadline_seconds=inputs.deadline(options.active_deadline_seconds, spec.dependencies)
        )
    per_task = spec.resources.extra.get("calls_per_task")  # unbounded by MAX_TASKS when given
    limit = spec.size if per_task else int(config.get("max_parallel_jobs") or MAX_TASKS)
    n_tasks = tasks_for(spec.size, int(per_task) if per_task else None, limit)
    tasks = jobdir.plan_tasks(spec.size, n_tasks)
    key = secrets_module.token_bytes(32)
    # the runner travels as source next to the bootstrap: only the payload's own modules are needed
    payload, plan = jobdir.encode_payload_and_code(spec, tasks, needs=())
    code = archive(plan.units) if plan.units else b""
    payload_objects = manifests.payload_secrets(
        spec.job_id,
        options,
        payload,
        key=key,
        bootstrap_source=_source(bootstrap),
        runner_source=_source(runner),
        requirements=options.pip_requirements,
        code=code,
        plan=plan,
        after=inputs.after(spec.dependencies, tasks),
    )
    return options, tasks, key, payload_objects, plan, code
