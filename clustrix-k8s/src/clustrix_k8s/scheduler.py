"""``cluster_type="kubernetes"``: each submission is a Kubernetes Job (or one per array task).

Submit: validate every option, pickle the calls and find the user's local code they
need (:mod:`clustrix.remote.localcode`: refusals such as a compiled extension or a unit over
``max_module_size`` come here), put the code's archive and the calls into payload
Secrets (refused with a clear error when too large, before anything is created), make sure the runner
ServiceAccount exists, create the Job(s), then the payload Secrets owned by them (their pods
wait for them; deleting the Jobs deletes everything, and the user needs no patch or delete
on Secrets). A ``map`` becomes one Indexed Job where the
server supports it (checked once per namespace by a server-side dry run), else one
Job per array task; calls are packed into at most ``max_parallel_jobs`` (default
:data:`clustrix_k8s.submission.MAX_TASKS`) tasks.

Poll: one list of Jobs per namespace per round, by label selector, for every open job
of that namespace; a list of Pods only when a Job failed (was it OOMKilled?) or has
waited longer than ``pending_timeout`` without its pods starting. Fetch: one list of
the job's result ConfigMaps (encrypted and signed, see :mod:`clustrix_k8s.bootstrap`). Cancel: delete the Jobs
with foreground propagation, so their pods, payload Secrets and result ConfigMaps go too.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from clustrix.batch import dependencies as held_jobs
from clustrix.errors import ConfigurationError
from clustrix.log import get_logger
from clustrix.plugin.dryrun import DryRun
from clustrix.plugin.hookspecs import hookimpl
from clustrix.plugin.types import JobHandle, JobSpec, JobState, JobStatus, Outcome
from clustrix.remote import jobdir
from clustrix.remote.environment.interpreter import RUNNER_MODULES
from clustrix_k8s import bootstrap, inputs, manifests, states, submission
from clustrix_k8s.api import KubeApi, KubernetesAPIError, api_for
from clustrix_k8s.options import EXTRA_KEYS, RUNNER_ACCOUNT

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig

log = get_logger("clustrix.k8s")

NAME = "kubernetes"
#: How a dry run without a loadable kubeconfig shows the API server in its requests.
NO_SERVER = "https://<api-server>"
#: Job ids per label selector (``clustrix.io/job-id in (...)``) in one list request.
SELECTOR_IDS = 100
#: How many pods' logs ``read_logs`` joins at most (failed pods first).
MAX_LOGS = 5


def _selector(job_ids: Sequence[str], extra: str = "") -> str:
    text = f"{manifests.JOB_ID_LABEL} in ({','.join(job_ids)})"
    return f"{text},{extra}" if extra else text


class KubernetesScheduler:
    """Scheduler hooks for ``cluster_type="kubernetes"``; the routed methods are pluggy hookimpls."""

    needs_environment = True
    persistent = True
    #: the pod's Python runs clustrix's runner (python_executable, or the image's python)
    python_needs = RUNNER_MODULES
    resource_keys = EXTRA_KEYS  # cpu_limit, node_selector, ... are configuration keys; these are the rest
    #: futures as arguments: the dependant's Jobs are created at once and their pods wait for their inputs
    holds_dependencies = True

    def __init__(self, api_factory: Callable[[Any], KubeApi] = api_for) -> None:
        self._api_factory = api_factory
        self._lock = threading.Lock()
        self._indexed: dict[tuple[str, str], bool] = {}
        self._accounts: set[tuple[str, str, str]] = set()
        self._started: set[str] = set()
        self._stuck: dict[str, JobStatus] = {}

    # ---- submit -----------------------------------------------------------
    @hookimpl
    def clustrix_submit(self, spec: JobSpec, wake: Callable[[], None]) -> JobHandle:
        config = spec.config
        api = self._api_factory(config)
        options, tasks, key, payload_objects, plan, code = submission.prepare(spec, api.namespace)
        if config.get("service_account") is None:
            self._ensure_runner_account(api, options.namespace)
        indexed = len(tasks) > 1 and self.supports_indexed(api, options.namespace)
        manifests_ = submission.job_manifests(spec, options, len(tasks), len(payload_objects), indexed=indexed)
        ns = options.namespace
        created: list[dict[str, Any]] = []
        try:
            # Jobs first, then their Secrets owned by them from the start: the pods wait for the Secrets,
            # and the user's Role needs neither patch nor delete on Secrets (deleting the Jobs deletes them)
            for manifest in manifests_:
                created.append(api.request("POST", "create", "jobs", ns, body=manifest))
            owners = [manifests.owner_reference(job) for job in created]
            for secret in payload_objects:
                owned = {**secret, "metadata": {**secret["metadata"], "ownerReferences": owners}}
                api.request("POST", "create", "secrets", ns, body=owned)
        except BaseException:
            self._delete_everything(api, ns, spec.job_id)
            raise
        if plan.units:  # every job carries its own copy: nothing on the cluster outlives its Jobs
            log.info(
                "clustrix.code_shipped",
                host=api.server,
                job_id=spec.job_id,
                sent=[unit.label for unit in plan.units],
                reused=[],
                archive_bytes=len(code),
                via="payload Secret",
            )
        log.info(
            "clustrix.job_submitted",
            scheduler=NAME,
            job_id=spec.job_id,
            jobs=len(created),
            tasks=len(tasks),
            calls=spec.size,
            namespace=ns,
            indexed=indexed,
        )
        return JobHandle(
            job_id=spec.job_id,
            scheduler=NAME,
            size=spec.size,
            native_id=created[0]["metadata"]["name"],
            host=api.server,
            data={
                "namespace": ns,
                "jobs": [job["metadata"]["name"] for job in created],
                "tasks": len(tasks),
                "indexed": indexed,
                "key": key.hex(),
                "pending_timeout": options.pending_timeout,
                "pip_step": bool(options.pip_requirements),
                "deadline": options.active_deadline_seconds,
                **held_jobs.handle_data(spec),
            },
        )

    def input_dir(self, handle: JobHandle, config: ClusterConfig) -> str | None:
        """Where a dependant submitted with ``config`` finds ``handle``'s outcomes (see :mod:`clustrix_k8s.inputs`)."""
        api = self._api_factory(config)
        return inputs.input_dir(handle, api.server, str(config.get("namespace") or api.namespace))

    @hookimpl
    def clustrix_dry_run(self, spec: JobSpec) -> DryRun:
        """The manifests submit would create (Secrets' contents left out) and its API requests; nothing is sent.

        The kubeconfig is read (namespace, server) but the server is not asked: Indexed Jobs are
        assumed (Kubernetes >= 1.24) unless this process already probed the namespace. A dry run needs
        no cluster: without a loadable kubeconfig it renders for the configured ``namespace`` (or
        ``default``) and shows the server as :data:`NO_SERVER`, with a note saying why.
        """
        notes = []
        try:
            api = self._api_factory(spec.config)
            server, default_namespace = api.server, api.namespace
        except ConfigurationError as exc:
            server, default_namespace = NO_SERVER, "default"
            notes.append(
                f"no Kubernetes configuration was loaded, so no server is shown; a real submit needs one: {exc}"
            )
        options, tasks, _key, payload_objects, _plan, _code = submission.prepare(spec, default_namespace)
        ns = options.namespace
        with self._lock:
            known = self._indexed.get((server, ns))
        indexed = len(tasks) > 1 and (known if known is not None else True)
        if len(tasks) > 1 and known is None:
            notes.append(
                "Indexed Job assumed: a real submit first asks the server (a server-side dry run) and makes "
                "one Job per task if it does not keep completionMode: Indexed"
            )
        jobs = submission.job_manifests(spec, options, len(tasks), len(payload_objects), indexed=indexed)
        if spec.config.get("service_account") is None:
            notes.append(
                f"a real submit creates the ServiceAccount {RUNNER_ACCOUNT!r} (and its Role) in {ns} if missing"
            )
        items = [*(submission.redacted(secret) for secret in payload_objects), *jobs]  # env values are secretKeyRefs
        base = f"{server}/api/v1/namespaces/{ns}"
        commands = [f"POST {server}/apis/batch/v1/namespaces/{ns}/jobs  ({job['metadata']['name']})" for job in jobs]
        commands += [f"POST {base}/secrets  ({s['metadata']['name']}, owned by the Job)" for s in payload_objects]
        return DryRun(
            scheduler=NAME,
            job_id=spec.job_id,
            calls=spec.size,
            tasks=len(tasks),
            script=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=2),
            script_kind="Kubernetes manifests (JSON, a v1 List; Secret data replaced by sizes)",
            commands=tuple(commands),
            notes=(
                *notes,
                "the payload Secrets carry the pickled calls, the environment_variables values and a per-job key: "
                "never shown",
            ),
        )

    def doctor_checks(self, config: ClusterConfig) -> list[tuple[str, Callable[[], Any]]]:
        """What ``clustrix doctor`` checks on Kubernetes: permissions, and whether the namespace looks shared."""
        from clustrix_k8s import doctor

        return doctor.checks(lambda: self._api_factory(config), config.get("namespace"))

    def supports_indexed(self, api: KubeApi, namespace: str) -> bool:
        """Whether the server keeps ``completionMode: Indexed`` (one server-side dry run, remembered)."""
        cache_key = (api.server, namespace)
        with self._lock:
            known = self._indexed.get(cache_key)
        if known is not None:
            return known
        probe = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"generateName": "clustrix-probe-", "namespace": namespace},
            "spec": {
                "completionMode": "Indexed",
                "completions": 2,
                "parallelism": 1,
                "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "probe", "image": "probe"}]}},
            },
        }
        try:
            reply = api.request("POST", "create", "jobs", namespace, body=probe, query={"dryRun": "All"})
            supported = (reply.get("spec") or {}).get("completionMode") == "Indexed"
        except KubernetesAPIError as exc:
            if exc.status in (401, 403):
                raise
            supported = False
        with self._lock:
            self._indexed[cache_key] = supported
        log.debug("clustrix.k8s_indexed_jobs", server=api.server, namespace=namespace, supported=supported)
        return supported

    def _ensure_runner_account(self, api: KubeApi, namespace: str) -> None:
        """Make sure the ServiceAccount pods run as may create ConfigMaps (its results) (created once if missing)."""
        cache_key = (api.server, namespace, RUNNER_ACCOUNT)
        if cache_key in self._accounts:
            return
        try:
            api.request("GET", "get", "serviceaccounts", namespace, name=RUNNER_ACCOUNT)
        except KubernetesAPIError as exc:
            if exc.status != 404:
                raise
            try:
                for resource, body in manifests.runner_identity(namespace, RUNNER_ACCOUNT):
                    try:
                        api.request("POST", "create", resource, namespace, body=body)
                    except KubernetesAPIError as create_error:
                        if create_error.status != 409:
                            raise
            except KubernetesAPIError as create_error:
                raise KubernetesAPIError(
                    f"the ServiceAccount {RUNNER_ACCOUNT!r} that clustrix pods run as does not exist in namespace "
                    f"{namespace!r} and could not be created: {create_error}. Ask an administrator to apply the "
                    "runner Role of docs/kubernetes.md, or set service_account= to an account that may create "
                    "ConfigMaps in this namespace",
                    status=create_error.status,
                ) from None
            self._wait_account_token(api, namespace)
        self._accounts.add(cache_key)

    def _wait_account_token(self, api: KubeApi, namespace: str, timeout: float = 30.0) -> None:
        """Wait until a new ServiceAccount has its token Secret: before Kubernetes 1.24 pods are refused until then."""
        version = api.version()
        if (int(version.get("major") or 1), int("".join(c for c in version.get("minor", "0") if c.isdigit()) or 0)) >= (
            1,
            24,
        ):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            account = api.request("GET", "get", "serviceaccounts", namespace, name=RUNNER_ACCOUNT)
            if account.get("secrets"):
                return
            time.sleep(0.2)

    def _delete_everything(self, api: KubeApi, namespace: str, job_id: str) -> None:
        """Remove what a failed submit created: its Jobs, and with them (they own them) its pods and Secrets."""
        try:
            api.request(
                "DELETE",
                "deletecollection",
                "jobs",
                namespace,
                query={"labelSelector": f"{manifests.JOB_ID_LABEL}={job_id}", "propagationPolicy": "Foreground"},
            )
        except KubernetesAPIError as exc:
            log.warning("clustrix.k8s_cleanup_failed", job_id=job_id, resource="jobs", error=str(exc))

    # ---- poll -------------------------------------------------------------
    @hookimpl
    def clustrix_poll(self, handles: Sequence[JobHandle], config: ClusterConfig) -> Mapping[str, JobStatus]:
        api = self._api_factory(config)
        by_namespace: dict[str, list[JobHandle]] = {}
        statuses: dict[str, JobStatus] = {}
        for handle in handles:
            stuck = self._stuck.get(handle.job_id)
            if stuck is not None:
                statuses[handle.job_id] = stuck
            else:
                by_namespace.setdefault(str(handle.data.get("namespace", "default")), []).append(handle)
        for namespace, members in by_namespace.items():
            for start in range(0, len(members), SELECTOR_IDS):
                group = members[start : start + SELECTOR_IDS]
                statuses.update(self._poll_namespace(api, namespace, group))
        return statuses

    def _poll_namespace(self, api: KubeApi, namespace: str, handles: Sequence[JobHandle]) -> dict[str, JobStatus]:
        ids = [h.job_id for h in handles]
        listing = api.request(
            "GET", "list", "jobs", namespace, query={"labelSelector": _selector(ids, f"{manifests.KIND_LABEL}=job")}
        )
        jobs_of: dict[str, list[dict[str, Any]]] = {}
        for item in listing.get("items") or []:
            jobs_of.setdefault(item["metadata"]["labels"][manifests.JOB_ID_LABEL], []).append(item)
        now = time.time()
        need_pods = [
            h
            for h in handles
            if states.needs_pods(
                jobs_of.get(h.job_id, []),
                now=now,
                pending_timeout=float(h.data.get("pending_timeout", 120.0)),
                started=h.job_id in self._started,
            )
        ]
        pods_of: dict[str, list[dict[str, Any]]] = {}
        if need_pods:
            pods = api.request(
                "GET", "list", "pods", namespace, query={"labelSelector": _selector([h.job_id for h in need_pods])}
            )
            for item in pods.get("items") or []:
                pods_of.setdefault(item["metadata"]["labels"][manifests.JOB_ID_LABEL], []).append(item)
        statuses: dict[str, JobStatus] = {}
        for handle in handles:
            jobs = jobs_of.get(handle.job_id, [])
            pods = pods_of.get(handle.job_id) if handle in need_pods else None
            if pods is not None and states.pods_started(pods):
                self._started.add(handle.job_id)
            status = states.job_status(
                jobs,
                len(handle.data.get("jobs") or [1]),
                pods,
                now=now,
                pending_timeout=float(handle.data.get("pending_timeout", 120.0)),
                pip_step=bool(handle.data.get("pip_step")),
            )
            if status is None:
                continue
            if status.state is JobState.FAILED and not all(bootstrap.final_condition(j) for j in jobs):
                # stuck pending: fail fast and free the cluster
                self._stuck[handle.job_id] = status
                self._delete_jobs(api, handle)
            if status.state.final:
                self._started.discard(handle.job_id)
            statuses[handle.job_id] = status
        return statuses

    # ---- fetch ------------------------------------------------------------
    @hookimpl
    def clustrix_fetch(self, handle: JobHandle, config: ClusterConfig) -> Sequence[Outcome | None]:
        api = self._api_factory(config)
        namespace = str(handle.data.get("namespace", "default"))
        listing = api.request(
            "GET",
            "list",
            "configmaps",
            namespace,
            query={"labelSelector": f"{manifests.JOB_ID_LABEL}={handle.job_id},{manifests.KIND_LABEL}=result"},
        )
        refused: list[str] = []
        found = bootstrap.outcome_bytes(listing.get("items") or [], bytes.fromhex(str(handle.data["key"])), refused)
        if refused:  # never decrypted nor unpickled: someone else wrote them, or they are cut short
            log.warning(
                "clustrix.k8s_results_refused",
                job_id=handle.job_id,
                attempts=refused,
                reason="a signature does not verify under the job's key (someone else wrote it?) or parts are missing",
            )
        outcomes = [jobdir.decode_outcome(found[i]) if i in found else None for i in range(handle.size)]
        self._stuck.pop(handle.job_id, None)
        return outcomes

    @hookimpl
    def clustrix_remove_job_dir(self, handle: JobHandle, config: ClusterConfig) -> bool:
        """``cleanup_on_success``, every result home: delete the Jobs (and so the results), unless dependants
        still read them (:mod:`clustrix.batch.dependencies`: this is asked again once they have)."""
        if not held_jobs.may_remove(handle.job_id):
            return False
        self._delete_jobs(self._api_factory(config), handle)
        return True

    # ---- cancel, logs -----------------------------------------------------
    def _delete_jobs(self, api: KubeApi, handle: JobHandle) -> None:
        api.request(
            "DELETE",
            "deletecollection",
            "jobs",
            str(handle.data.get("namespace", "default")),
            query={"labelSelector": f"{manifests.JOB_ID_LABEL}={handle.job_id}", "propagationPolicy": "Foreground"},
        )

    @hookimpl
    def clustrix_cancel(self, handle: JobHandle, config: ClusterConfig) -> bool:
        self._delete_jobs(self._api_factory(config), handle)
        return True

    @hookimpl
    def clustrix_read_logs(self, handle: JobHandle, config: ClusterConfig, stream: str) -> str:
        if stream not in ("stdout", "stderr"):
            raise ValueError(f"stream={stream!r} is not valid: use 'stdout' or 'stderr'")
        api = self._api_factory(config)
        namespace = str(handle.data.get("namespace", "default"))
        pods = api.request(
            "GET", "list", "pods", namespace, query={"labelSelector": f"{manifests.JOB_ID_LABEL}={handle.job_id}"}
        )
        items = sorted(
            pods.get("items") or [],
            key=lambda p: (
                (p.get("status") or {}).get("phase") != "Failed",
                p["metadata"].get("creationTimestamp", ""),
            ),
        )
        texts = []
        for pod in items[:MAX_LOGS]:
            name = pod["metadata"]["name"]
            try:
                text = api.request("GET", "get", "pods", namespace, name=name, subresource="log", raw=True)
            except KubernetesAPIError as exc:
                if exc.status in (400, 404):  # not started yet, or gone
                    continue
                raise
            texts.append(text if len(items) == 1 else f"==> pod {name} <==\n{text}")
        return "\n".join(texts)
