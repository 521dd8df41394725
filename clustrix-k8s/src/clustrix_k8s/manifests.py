"""The Kubernetes objects of one clustrix job, rendered as plain dicts (pure).

- payload Secrets ``clustrix-<id>-payload-<n>``: the user's local code (the
  :func:`clustrix.remote.localcode.units.archive` of the job's units, if any) followed by the
  cloudpickled calls, in chunks, the first Secret also holding ``meta.json``,
  ``bootstrap.py``, ``clustrix_runner.py`` and the values of ``environment_variables``
  (``env.<n>``, which the container's env takes by ``secretKeyRef``: the Job and Pod
  specs hold only the names); the payload never travels in args or env;
- one Indexed Job (``completionMode: Indexed``) where the server supports it, else one
  Job per array task (``clustrix-<id>-t<n>``), each pod running ``bootstrap.py``;
- the runner identity (ServiceAccount, Role, RoleBinding) that lets pods write their
  result ConfigMaps.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from clustrix.errors import ClustrixError
from clustrix.remote.localcode.plan import CodePlan
from clustrix.remote.localcode.units import format_size
from clustrix_k8s.bootstrap import MOUNT, SCRATCH
from clustrix_k8s.options import JobOptions
from clustrix_k8s.states import PIP_FAILED_EXIT

#: Payload bytes per Secret (the API limit for a Secret's data is 1 MiB).
CHUNK_BYTES = 700 * 1024
#: At most this many payload Secrets per job (about 44 MiB of local code, calls and arguments).
MAX_CHUNKS = 64
JOB_ID_LABEL = "clustrix.io/job-id"
KIND_LABEL = "clustrix.io/kind"
MANAGED_LABEL = "app.kubernetes.io/managed-by"
CONTAINER = "clustrix"


class PayloadTooLargeError(ClustrixError, ValueError):
    """The cloudpickled calls exceed what the payload Secrets can carry."""


def prefix(job_id: str) -> str:
    """The name prefix of every object of the job: a DNS label (``clustrix-<job id>``)."""
    return f"clustrix-{job_id}".lower()


def base_labels(job_id: str, options: JobOptions) -> dict[str, str]:
    return {**options.labels, JOB_ID_LABEL: job_id, MANAGED_LABEL: "clustrix"}


def _secret(name: str, namespace: str, labels: Mapping[str, str], data: Mapping[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def too_large_message(payload: int, code: int, plan: CodePlan) -> str:
    """Why a job does not fit its payload Secrets: the calls' size, the code's, and what to do (pure)."""
    limit = f"{MAX_CHUNKS * CHUNK_BYTES / 2**20:.0f} MiB that {MAX_CHUNKS} payload Secrets can carry"
    if not code:
        return (
            f"the job's calls and arguments pickle to {_mib(payload)}, more than the {limit}: pass large data by "
            "reference (object storage, a volume, a URL) instead of as an argument"
        )
    units = sorted(plan.units, key=lambda u: -u.size)
    listed = ", ".join(f"{u.name} {format_size(u.size)}" for u in units[:5]) + (", ..." if len(units) > 5 else "")
    biggest = units[0].name
    return (
        f"the job's local code ({listed}; {_mib(code)} compressed) and its calls and arguments "
        f"({_mib(payload)} pickled) add up to {_mib(code + payload)}, more than the {limit}, so nothing was "
        f"created. Move large data files out of {biggest!r} and read them from a volume, install it in the image "
        f"and set exclude_modules=[{biggest!r}], or pass large arguments by reference (object storage, a volume, "
        "a URL)"
    )


def payload_secrets(
    job_id: str,
    options: JobOptions,
    payload: bytes,
    *,
    key: bytes,
    bootstrap_source: str,
    runner_source: str,
    requirements: Sequence[str] = (),
    code: bytes = b"",
    plan: CodePlan | None = None,
    after: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """The payload Secrets of a job; :class:`PayloadTooLargeError` before anything is created.

    ``code`` is ``clustrix.remote.localcode.units.archive(plan.units)``: it travels first in the same
    chunked stream as the calls, and ``meta.json`` tells the pod its size, the units'
    folders to put on ``sys.path`` and the modules to import before the calls.
    """
    plan = plan or CodePlan()
    environment = options.environment_variables
    stream = code + payload
    chunks = [stream[i : i + CHUNK_BYTES] for i in range(0, len(stream), CHUNK_BYTES)] or [b""]
    if len(chunks) > MAX_CHUNKS:
        raise PayloadTooLargeError(too_large_message(len(payload), len(code), plan))
    labels = {**base_labels(job_id, options), KIND_LABEL: "payload"}
    meta = {
        "chunks": len(chunks),
        "sha256": hashlib.sha256(stream).hexdigest(),
        "key": key.hex(),
        "prefix": prefix(job_id),
        "labels": {JOB_ID_LABEL: job_id, MANAGED_LABEL: "clustrix"},
        "code": {
            "size": len(code),
            "units": [unit.label for unit in plan.units] if code else [],
            "modules": list(plan.modules) if code else [],
        },
        # futures as arguments: the upstream jobs this job's pods fetch their inputs from (clustrix_k8s.inputs)
        "after": list(after),
    }
    secrets = []
    for number, chunk in enumerate(chunks):
        data = {"payload": chunk}
        if number == 0:
            data.update(
                {
                    "meta.json": json.dumps(meta).encode(),
                    "bootstrap.py": bootstrap_source.encode(),
                    "clustrix_runner.py": runner_source.encode(),
                    "requirements.txt": "".join(f"{line}\n" for line in requirements).encode(),
                    **{env_key(n): str(value).encode() for n, value in enumerate(environment.values())},
                }
            )
        secrets.append(_secret(f"{prefix(job_id)}-payload-{number}", options.namespace, labels, data))
    return secrets


def env_key(number: int) -> str:
    """The key of the payload Secret holding the value of the ``number``-th of ``environment_variables``."""
    return f"env.{number}"


def container_command(options: JobOptions) -> list[str]:
    """``sh -c`` that installs the environment if asked, runs the user's set-up, then the bootstrap."""
    python = shlex.quote(options.python)
    lines = ["set -e"]
    if options.pip_requirements:
        # one retry and a short timeout: a pod without a reachable index fails in seconds, not minutes,
        # and exits PIP_FAILED_EXIT so the poll names the fix (states.pip_step_failed)
        lines += [
            'CLUSTRIX_SITE="$(mktemp -d)"',
            f"{python} -m pip install --quiet --no-cache-dir --disable-pip-version-check --retries 1 --timeout 10 "
            f'--target "$CLUSTRIX_SITE" -r {shlex.quote(MOUNT + "/0/requirements.txt")} '
            f"|| {{ echo 'clustrix: the pip step failed' >&2; exit {PIP_FAILED_EXIT}; }}",
            'export PYTHONPATH="$CLUSTRIX_SITE${PYTHONPATH:+:$PYTHONPATH}"',
        ]
    lines += list(options.pre_commands)
    lines.append(f"exec {python} {shlex.quote(MOUNT + '/0/bootstrap.py')}")
    return ["/bin/sh", "-c", "\n".join(lines)]


def _field(path: str) -> dict[str, Any]:
    return {"valueFrom": {"fieldRef": {"fieldPath": path}}}


def pod_template(job_id: str, options: JobOptions, n_chunks: int, *, task: int | None, indexed: bool) -> dict[str, Any]:
    """The pod template: one container running the bootstrap with the payload Secrets mounted."""
    # values stay in the payload Secret: the Job and Pod specs, which a view role reads, hold only names
    env: list[dict[str, Any]] = [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": f"{prefix(job_id)}-payload-0", "key": env_key(n)}}}
        for n, name in enumerate(options.environment_variables)
    ]
    env += [
        {"name": "CLUSTRIX_NAMESPACE", **_field("metadata.namespace")},
        {"name": "CLUSTRIX_POD_NAME", **_field("metadata.name")},
        {"name": "CLUSTRIX_JOB_NAME", **_field("metadata.labels['job-name']")},
        {"name": "CLUSTRIX_JOB_UID", **_field("metadata.labels['controller-uid']")},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if "TMPDIR" not in options.environment_variables:
        # clustrix's own writes (the pip step's site, the job directory) go to its emptyDir: the image's
        # root filesystem may be read-only and its user anyone
        env.append({"name": "TMPDIR", "value": SCRATCH})
    if indexed:
        env.append(
            {"name": "CLUSTRIX_TASK_ID", **_field("metadata.annotations['batch.kubernetes.io/job-completion-index']")}
        )
    else:
        env.append({"name": "CLUSTRIX_TASK_ID", "value": str(task or 0)})
    resources: dict[str, Any] = {}
    if options.requests:
        resources["requests"] = dict(options.requests)
    if options.limits:
        resources["limits"] = dict(options.limits)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": options.image,
        "command": container_command(options),
        "env": env,
        "resources": resources,
        "volumeMounts": [
            *({"name": f"payload-{n}", "mountPath": f"{MOUNT}/{n}", "readOnly": True} for n in range(n_chunks)),
            {"name": "clustrix-scratch", "mountPath": SCRATCH},
            *(dict(m) for m in options.volume_mounts),
        ],
    }
    if options.security_context:
        container["securityContext"] = dict(options.security_context)
    if options.image_pull_policy:
        container["imagePullPolicy"] = options.image_pull_policy
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": options.service_account,
        "containers": [container],
        "volumes": [
            *(
                {
                    "name": f"payload-{n}",
                    # 0444: the image's user may be anyone (non-root images); only this pod's own
                    # processes see the volume, and the namespace is the trust boundary (docs/security.md)
                    "secret": {"secretName": f"{prefix(job_id)}-payload-{n}", "defaultMode": 0o444},
                }
                for n in range(n_chunks)
            ),
            {"name": "clustrix-scratch", "emptyDir": {}},
            *(dict(v) for v in options.volumes),
        ],
    }
    if options.node_selector:
        spec["nodeSelector"] = dict(options.node_selector)
    if options.tolerations:
        spec["tolerations"] = [dict(t) for t in options.tolerations]
    if options.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in options.image_pull_secrets]
    labels = base_labels(job_id, options)
    if task is not None:
        labels["clustrix.io/task"] = str(task)
    return {"metadata": {"labels": labels, "annotations": dict(options.annotations)}, "spec": spec}


def job_manifest(
    job_id: str,
    name: str,
    options: JobOptions,
    n_chunks: int,
    *,
    n_tasks: int,
    task: int | None,
    indexed: bool,
    parallelism: int | None = None,
    function_name: str = "",
) -> dict[str, Any]:
    """A Job running ``n_tasks`` indexed pods, or the single pod of array task ``task``."""
    labels = {**base_labels(job_id, options), KIND_LABEL: "job"}
    if task is not None:
        labels["clustrix.io/task"] = str(task)
    annotations = {**options.annotations}
    if function_name:
        annotations["clustrix.io/function"] = function_name[:200]
    spec: dict[str, Any] = {
        "backoffLimit": options.backoff_limit,
        "template": pod_template(job_id, options, n_chunks, task=task, indexed=indexed),
    }
    if indexed:
        spec.update(
            completionMode="Indexed",
            completions=n_tasks,
            parallelism=min(n_tasks, parallelism or n_tasks),
        )
    if options.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = options.active_deadline_seconds
        # the pod's too: the kubelet ends a pod at its deadline itself, while a Job controller of 1.20
        # (and older) acts on the Job's only at its next sync, which a pod that is already running may not
        # cause until it ends; the pod starts after its Job, so the Job is past its deadline by then
        spec["template"]["spec"]["activeDeadlineSeconds"] = options.active_deadline_seconds
    if options.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = options.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": options.namespace, "labels": labels, "annotations": annotations},
        "spec": spec,
    }


def owner_reference(job: Mapping[str, Any]) -> dict[str, Any]:
    """An ownerReference to a created Job, so deleting the Job deletes what it owns."""
    return {"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"], "uid": job["metadata"]["uid"]}


#: What the runner ServiceAccount may do: create its result ConfigMaps; and, for a job that takes another's
#: results as arguments, list them (encrypted, signed) and list Jobs (to know when an input can come no more).
RUNNER_RULES = [
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "list"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list"]},
]


def runner_identity(namespace: str, account: str) -> list[tuple[str, dict[str, Any]]]:
    """The ServiceAccount, Role and RoleBinding that let pods create their result ConfigMaps (and read inputs)."""
    meta = {"name": account, "namespace": namespace, "labels": {MANAGED_LABEL: "clustrix"}}
    return [
        ("serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}),
        (
            "roles",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": meta,
                "rules": RUNNER_RULES,
            },
        ),
        (
            "rolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": meta,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
            },
        ),
    ]
