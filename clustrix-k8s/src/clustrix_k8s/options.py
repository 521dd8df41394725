"""The Kubernetes configuration keys, and the validated options of one submission (pure).

Every key is declared to core through ``clustrix_config_keys``, so ``configure()``,
profiles, ``CLUSTRIX_*`` variables and per-function ``@cluster(...)`` keywords accept
them. :func:`job_options` checks them all and raises ``ValueError`` naming the key and
the fix before anything is created in the cluster.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import attrs

from clustrix.config.keys import PATH, ConfigKey
from clustrix.config.resources import Resources, parse_memory

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig

_K8S = ("kubernetes",)
_OBJECTS = list[dict[str, Any]]

#: Keys this plugin adds to the configuration: default, type and meaning of each.
DECLARED_KEYS: dict[str, ConfigKey] = {
    "namespace": ConfigKey(
        default=None,
        type=str | None,
        help="the namespace; `None`: the context's namespace, the pod's own in the cluster, else `default`",
        backends=_K8S,
    ),
    "image": ConfigKey(
        default=None,
        type=str | None,
        help="container image; `None`: `python:<major.minor>-slim` with the pip step",
        backends=_K8S,
    ),
    "image_pull_policy": ConfigKey(
        default=None,
        type=Literal["Always", "IfNotPresent", "Never"] | None,
        help="the containers' `imagePullPolicy`",
        backends=_K8S,
    ),
    "image_pull_secrets": ConfigKey(
        default=[], type=list[str] | str, help="names of docker-registry Secrets", backends=_K8S
    ),
    "kubeconfig": ConfigKey(
        default=None,
        type=PATH | None,
        help="kubeconfig file; `None`: `$KUBECONFIG` or `~/.kube/config`, or the in-cluster ServiceAccount "
        "inside a pod",
        backends=_K8S,
    ),
    "kube_context": ConfigKey(
        default=None,
        type=str | None,
        help="a context of the kubeconfig (default: its current context)",
        backends=_K8S,
    ),
    "service_account": ConfigKey(
        default=None,
        type=str | None,
        help="the pods' ServiceAccount (must be able to create Secrets); `None`: `clustrix-runner`, created if "
        "missing and allowed",
        backends=_K8S,
    ),
    "node_selector": ConfigKey(default={}, type=dict[str, str], help="the pod's `nodeSelector`", backends=_K8S),
    "tolerations": ConfigKey(
        default=[], type=_OBJECTS, help="the pod's `tolerations` (Kubernetes objects as dicts)", backends=_K8S
    ),
    "labels": ConfigKey(
        default={},
        type=dict[str, str],
        help="added to the Jobs and pods (clustrix adds `clustrix.io/job-id`)",
        backends=_K8S,
    ),
    "annotations": ConfigKey(default={}, type=dict[str, str], help="added to the Jobs and pods", backends=_K8S),
    "ttl_seconds_after_finished": ConfigKey(
        default=None,
        type=int | None,
        help="the Job's `ttlSecondsAfterFinished` (deletes it, and its results, after that long)",
        backends=_K8S,
    ),
    "backoff_limit": ConfigKey(
        default=0, type=int, help="the Job's `backoffLimit`: retries of a failed pod", backends=_K8S
    ),
    "cpu_limit": ConfigKey(
        default=None,
        type=int | float | str | None,
        help='container CPU **limit**: `2`, `0.5` or `"500m"`',
        backends=_K8S,
    ),
    "memory_limit": ConfigKey(
        default=None,
        type=str | int | None,
        help='container memory **limit**: `"2GB"`, `"512Mi"`, bytes',
        backends=_K8S,
    ),
    "pending_timeout": ConfigKey(
        default=120.0,
        type=float,
        help="seconds a pod may wait on an image, a Secret or a node before the job fails",
        backends=_K8S,
    ),
    "replicate_environment": ConfigKey(
        default=None,
        type=bool | None,
        help="force the pip step on (`True`) or off (`False`); `None`: on unless `image` or `python_executable` is set",
        backends=_K8S,
    ),
    "security_context": ConfigKey(
        default={},
        type=dict[str, Any],
        help="the container's `securityContext`, e.g. `{'readOnlyRootFilesystem': True, 'runAsNonRoot': True}`; "
        "clustrix writes only to its own `emptyDir` (`TMPDIR`)",
        backends=_K8S,
    ),
    "volumes": ConfigKey(
        default=[], type=_OBJECTS, help="extra pod volumes (Kubernetes objects as dicts)", backends=_K8S
    ),
    "volume_mounts": ConfigKey(
        default=[],
        type=_OBJECTS,
        help="extra container mounts of `volumes` (Kubernetes objects as dicts)",
        backends=_K8S,
    ),
}

#: The defaults of :data:`DECLARED_KEYS`.
CONFIG_KEYS: dict[str, Any] = {name: key.default for name, key in DECLARED_KEYS.items()}

#: ``resources.extra`` keys this plugin understands (its other options are the configuration keys above).
EXTRA_KEYS: dict[str, str] = {
    "calls_per_task": "how many calls of a map each pod runs (default: spread over max_parallel_jobs pods)",
}

#: The ServiceAccount pods run as unless ``service_account`` names another.
RUNNER_ACCOUNT = "clustrix-runner"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_CPU = re.compile(r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")


@attrs.frozen(kw_only=True)
class JobOptions:
    """Everything that shapes the Kubernetes objects of one job, checked."""

    namespace: str
    image: str
    image_pull_policy: str | None
    image_pull_secrets: tuple[str, ...]
    service_account: str
    node_selector: dict[str, str]
    tolerations: tuple[dict[str, Any], ...]
    labels: dict[str, str]
    annotations: dict[str, str]
    ttl_seconds_after_finished: int | None
    backoff_limit: int
    requests: dict[str, str]
    limits: dict[str, str]
    active_deadline_seconds: int | None
    python: str
    pip_requirements: tuple[str, ...]
    environment_variables: dict[str, str]
    pre_commands: tuple[str, ...]
    pending_timeout: float
    volumes: tuple[dict[str, Any], ...] = ()
    volume_mounts: tuple[dict[str, Any], ...] = ()
    security_context: dict[str, Any] = attrs.field(factory=dict)


def _fail(key: str, value: Any, fix: str) -> ValueError:
    return ValueError(f"{key}={value!r} is not valid for cluster_type='kubernetes': {fix}")


def _string_map(key: str, value: Any, *, check_keys: bool) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise _fail(key, value, f"use a mapping of strings, e.g. {key}={{'team': 'physics'}}")
    for k, v in value.items():
        if check_keys and not _LABEL_KEY.match(k):
            raise _fail(
                key, value, f"{k!r} is not a valid label key (letters, digits, '-', '_', '.', optional prefix/)"
            )
        if key in {"labels", "node_selector"} and (len(v) > 63 or not _LABEL_VALUE.match(v)):
            raise _fail(key, value, f"{v!r} is not a valid label value (at most 63 letters, digits, '-', '_', '.')")
    return dict(value)


def cpu_quantity(key: str, value: Any) -> str:
    """A CPU amount as a Kubernetes quantity: ``2``, ``0.5`` or ``"500m"``."""
    if isinstance(value, bool) or value is None:
        raise _fail(key, value, f"use a number of cores or millicores, e.g. {key}=2 or {key}='500m'")
    text = str(value)
    if not _CPU.match(text) or float(text.rstrip("m") or 0) <= 0:
        raise _fail(key, value, f"use a positive number of cores or millicores, e.g. {key}=2 or {key}='500m'")
    return text


def _cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def memory_quantity(key: str, value: Any) -> str:
    """A memory amount in bytes as a Kubernetes quantity; accepts ``"2GB"``, ``"512Mi"``, bytes."""
    try:
        return str(parse_memory(value, parameter=key))
    except ValueError as exc:
        raise ValueError(f"{exc} (for cluster_type='kubernetes')") from None


def _count(key: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(key, value, f"use a whole number >= {minimum}")
    return value


def _mappings(key: str, value: Any, example: str) -> tuple[dict[str, Any], ...]:
    if not value:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, Mapping) and v.get("name") for v in value):
        raise _fail(key, value, f"use a list of Kubernetes {key} objects with names, e.g. {example}")
    return tuple(dict(v) for v in value)


def job_options(
    config: ClusterConfig, resources: Resources, environment: Mapping[str, Any], *, default_namespace: str = "default"
) -> JobOptions:
    """Check the configuration and resources of one submission; ``ValueError`` names what is wrong.

    ``default_namespace`` is used when ``namespace`` is not set: the kubeconfig context's
    namespace, or the pod's own when running inside the cluster.
    """
    get = config.get
    for key in ("partition", "queue"):
        if getattr(resources, key) is not None:
            raise ValueError(
                f"{key}={getattr(resources, key)!r} has no meaning on Kubernetes: use node_selector={{...}} "
                "or tolerations=[...] to choose nodes"
            )
    for key in ("module_loads", "conda_env_name"):
        if get(key):
            raise ValueError(
                f"{key}={get(key)!r} cannot be used with cluster_type='kubernetes' (pods have no modules or "
                "conda set-up): use an image that contains the software, or python_executable"
            )
    unknown = set(resources.extra) - set(EXTRA_KEYS)
    if unknown:
        names = ", ".join(sorted(unknown))
        known = ", ".join(sorted(CONFIG_KEYS))
        raise ValueError(f"@cluster got option(s) {names} that the kubernetes backend does not know; known: {known}")
    namespace = get("namespace") or default_namespace
    if not isinstance(namespace, str) or not _DNS_LABEL.match(namespace) or len(namespace) > 63:
        raise _fail("namespace", namespace, "use a DNS label such as 'default' or 'science'")
    python_version = str(environment.get("python") or "")
    image = get("image")
    if image is None:
        if not python_version:
            raise ValueError("image is not set and the local Python version is unknown: set image='python:3.11-slim'")
        image = f"python:{python_version}-slim"
    if not isinstance(image, str) or not image.strip() or any(c.isspace() for c in image):
        raise _fail("image", image, "use an image reference such as 'python:3.11-slim'")
    policy = get("image_pull_policy")
    if policy is not None and policy not in _PULL_POLICIES:
        raise _fail("image_pull_policy", policy, "use one of " + ", ".join(_PULL_POLICIES))
    pull_secrets = get("image_pull_secrets") or []
    if isinstance(pull_secrets, str):
        pull_secrets = [pull_secrets]
    if not all(isinstance(s, str) and _DNS_LABEL.match(s) for s in pull_secrets):
        raise _fail("image_pull_secrets", pull_secrets, "use a list of Secret names, e.g. ['regcred']")
    account = get("service_account") or RUNNER_ACCOUNT
    if not isinstance(account, str) or not _DNS_LABEL.match(account):
        raise _fail("service_account", account, "use the name of a ServiceAccount in the namespace")
    tolerations = get("tolerations") or []
    if not isinstance(tolerations, (list, tuple)) or not all(isinstance(t, Mapping) for t in tolerations):
        raise _fail("tolerations", tolerations, "use a list of mappings, e.g. [{'key': 'gpu', 'operator': 'Exists'}]")
    ttl = get("ttl_seconds_after_finished")
    if ttl is not None:
        ttl = _count("ttl_seconds_after_finished", ttl, minimum=0)
    backoff = _count("backoff_limit", get("backoff_limit") if get("backoff_limit") is not None else 0, minimum=0)
    pending = get("pending_timeout")
    if isinstance(pending, bool) or not isinstance(pending, (int, float)) or pending <= 0:
        raise _fail("pending_timeout", pending, "use a positive number of seconds, e.g. 120")
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if resources.cores is not None:
        requests["cpu"] = str(resources.cores)
    if resources.memory is not None:
        requests["memory"] = str(resources.memory)
    if get("cpu_limit") is not None:
        limits["cpu"] = cpu_quantity("cpu_limit", get("cpu_limit"))
    if get("memory_limit") is not None:
        limits["memory"] = memory_quantity("memory_limit", get("memory_limit"))
    if "cpu" in requests and "cpu" in limits and _cores(requests["cpu"]) > _cores(limits["cpu"]):
        raise ValueError(
            f"cores={resources.cores} asks for more than cpu_limit={get('cpu_limit')!r}: Kubernetes refuses a request "
            "above its limit; raise cpu_limit or lower cores"
        )
    if "memory" in requests and "memory" in limits and int(requests["memory"]) > int(limits["memory"]):
        raise ValueError(
            f"memory={requests['memory']} bytes asks for more than memory_limit={get('memory_limit')!r}: Kubernetes "
            "refuses a request above its limit; raise memory_limit or lower memory"
        )
    if resources.gpus:
        limits["nvidia.com/gpu"] = str(resources.gpus)
    python = get("python_executable") or "python"
    replicate = get("replicate_environment")
    if replicate is None:
        replicate = get("image") is None and get("python_executable") is None
    from clustrix.remote.environment.venv import requirements as pinned

    requirements = tuple(pinned(environment)) if replicate else ()
    if replicate and not any(r.lower().startswith("cloudpickle") for r in requirements):
        requirements = (*requirements, "cloudpickle")
    volumes = _mappings("volumes", get("volumes"), "[{'name': 'data', 'persistentVolumeClaim': {'claimName': 'data'}}]")
    mounts = _mappings("volume_mounts", get("volume_mounts"), "[{'name': 'data', 'mountPath': '/data'}]")
    volume_names = {v.get("name") for v in volumes}
    for mount in mounts:
        if mount.get("name") not in volume_names or not str(mount.get("mountPath", "")).startswith("/"):
            raise _fail(
                "volume_mounts", mounts, "each mount needs the name of one of volumes=[...] and an absolute mountPath"
            )
    security = get("security_context") or {}
    if not isinstance(security, Mapping) or not all(isinstance(k, str) for k in security):
        raise _fail(
            "security_context", security, "use a mapping such as {'readOnlyRootFilesystem': True, 'runAsUser': 1000}"
        )
    variables = dict(get("environment_variables") or {})
    for name in variables:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise _fail("environment_variables", variables, f"{name!r} is not a valid variable name")
    return JobOptions(
        namespace=namespace,
        image=image,
        image_pull_policy=policy,
        image_pull_secrets=tuple(pull_secrets),
        service_account=account,
        node_selector=_string_map("node_selector", get("node_selector"), check_keys=True),
        tolerations=tuple(dict(t) for t in tolerations),
        labels=_string_map("labels", get("labels"), check_keys=True),
        annotations=_string_map("annotations", get("annotations"), check_keys=True),
        ttl_seconds_after_finished=ttl,
        backoff_limit=backoff,
        requests=requests,
        limits=limits,
        active_deadline_seconds=resources.time,
        python=python,
        pip_requirements=requirements,
        environment_variables=variables,
        pre_commands=tuple(get("pre_execution_commands") or ()),
        pending_timeout=float(pending),
        volumes=volumes,
        volume_mounts=mounts,
        security_context=dict(security),
    )
