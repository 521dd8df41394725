"""From inside a pod (in-cluster configuration), and how map is shaped on this server."""

from __future__ import annotations

from typing import Any

import pytest

from clustrix import cluster, configure
from clustrix.config.settings import resolve_config
from clustrix_k8s.api import KubeApi, api_for
from clustrix_k8s.scheduler import KubernetesScheduler
from tests.k8s import rbac_setup
from tests.k8s.conftest import with_clustrix_in_pods
from tests.testbed.k8s import KubeCluster

pytestmark = pytest.mark.testbed_k8s
NAMESPACE = "in-cluster"


@pytest.fixture(scope="module")
def pod_submitter(kube: KubeCluster) -> str:
    """A namespace with the documented Roles, both bound to the ServiceAccount ``notebook``.

    The submitter Role lets the notebook submit; the runner Role lets it send back its own
    result, as the outer call of the test runs as ``notebook`` too.
    """
    from kubernetes import client

    notebook = {"kind": "ServiceAccount", "name": "notebook", "namespace": NAMESPACE}
    rbac_setup.apply(kube, NAMESPACE, notebook, accounts=("notebook",))
    client.RbacAuthorizationV1Api(kube.api()).create_namespaced_role_binding(
        NAMESPACE,
        {
            "metadata": {"name": "clustrix-runner-notebook"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "clustrix-runner"},
            "subjects": [notebook],
        },
    )
    return NAMESPACE


def test_a_pod_submits_its_own_job_with_the_in_cluster_configuration(
    k8s_config: dict[str, Any], pod_submitter: str, tmp_path: Any
) -> None:
    # the pod submits with its own clustrix and kubernetes client, run by the image's python
    options = {
        **k8s_config,
        "environment_variables": {
            "CLUSTRIX_DATA_DIR": str(tmp_path / "pod-registry"),
            "CLUSTRIX_CONFIG": "/nonexistent",
        },
    }
    configure(**with_clustrix_in_pods(options), namespace=pod_submitter, service_account="notebook")
    image = k8s_config["image"]

    @cluster
    def outer() -> tuple[int, str]:
        from clustrix import cluster, configure
        from clustrix.config.settings import resolve_config

        # no kubeconfig and no namespace: the pod's ServiceAccount and namespace are used, and the
        # API server is reached through the kubernetes Service (KUBERNETES_SERVICE_HOST, kube-proxy)
        configure(cluster_type="kubernetes", image=image, job_poll_interval=0.2)

        @cluster
        def inner(x: int) -> str:
            import os

            return f"{x + 1} from {os.environ['CLUSTRIX_NAMESPACE']}"

        return inner(41), str(resolve_config().get("kubeconfig"))

    assert outer() == ("42 from in-cluster", "None")


def test_map_uses_one_job_per_task_where_the_server_has_no_indexed_jobs(
    k8s_config: dict[str, Any], kube: KubeCluster
) -> None:
    configure(**k8s_config)
    shared = api_for(resolve_config())
    counted = KubeApi(shared.client, shared.server, shared.namespace)
    # Kubernetes 1.20 drops completionMode from a dry-run Job: map falls back to a Job per task
    assert KubernetesScheduler().supports_indexed(counted, "default") is False
    assert dict(counted.calls) == {"create jobs": 1}

    @cluster(max_parallel_jobs=4)
    def plus_one(x: int) -> int:
        return x + 1

    futures = plus_one.submit_map(range(10))
    assert [f.result(timeout=120) for f in futures] == list(range(1, 11))
    handle = futures[0].handle
    assert handle.data["indexed"] is False
    assert len(handle.data["jobs"]) == 4


def test_one_poll_round_lists_the_jobs_of_a_namespace_once_for_all_open_jobs(k8s_config: dict[str, Any]) -> None:
    configure(**k8s_config)

    @cluster
    def nap(seconds: float) -> float:
        import time

        time.sleep(seconds)
        return seconds

    futures = [nap.submit(3), nap.submit(3), *nap.submit_map([3, 3, 3])]
    handles = list({f.handle.job_id: f.handle for f in futures}.values())
    config = resolve_config()
    shared = api_for(config)
    counted = KubeApi(shared.client, shared.server, shared.namespace)  # its own counter: the poller thread polls too
    statuses = KubernetesScheduler(api_factory=lambda _: counted).clustrix_poll(handles, config)
    assert set(statuses) == {h.job_id for h in handles}
    assert dict(counted.calls) == {"list jobs": 1}
    assert [f.result(timeout=120) for f in futures] == [3, 3, 3, 3, 3]
