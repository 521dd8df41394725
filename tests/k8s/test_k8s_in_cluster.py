"""From inside a pod (in-cluster configuration), and how map is shaped on this server."""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest
import yaml

from clustrix import cluster, configure
from clustrix.config import resolve_config
from clustrix_k8s.api import api_for
from clustrix_k8s.scheduler import KubernetesScheduler
from tests.k8s.test_k8s_rbac import RBAC
from tests.testbed.k8s import KubeCluster

pytestmark = pytest.mark.testbed_k8s
NAMESPACE = "in-cluster"


@pytest.fixture(scope="module")
def pod_submitter(kube: KubeCluster) -> str:
    """A namespace with the documented Roles, the submitter Role bound to the ServiceAccount ``notebook``."""
    from kubernetes import client, utils

    api = kube.api()
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    kube.wait_service_account(NAMESPACE)
    core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": "notebook"}})
    for document in (d for d in yaml.safe_load_all(RBAC.read_text()) if d):
        document["metadata"]["namespace"] = NAMESPACE
        for subject in document.get("subjects") or []:
            subject.update(
                {"kind": "ServiceAccount", "name": "notebook", "namespace": NAMESPACE}
                if subject["kind"] == "User"
                else {"namespace": NAMESPACE}
            )
            subject.pop("apiGroup", None)
        utils.create_from_dict(api, document, namespace=NAMESPACE)
    deadline = time.monotonic() + 30
    while not all(core.read_namespaced_service_account(n, NAMESPACE).secrets for n in ("notebook", "clustrix-runner")):
        assert time.monotonic() < deadline, "the ServiceAccounts got no token"
        time.sleep(0.2)
    return NAMESPACE


def test_a_pod_submits_its_own_job_with_the_in_cluster_configuration(
    k8s_config: dict[str, Any], pod_submitter: str, tmp_path: Any
) -> None:
    configure(
        **k8s_config,
        namespace=pod_submitter,
        service_account="notebook",
        environment_variables={"CLUSTRIX_DATA_DIR": str(tmp_path / "pod-registry"), "CLUSTRIX_CONFIG": "/nonexistent"},
    )
    python = sys.executable

    @cluster
    def outer() -> tuple[int, str]:
        from clustrix import cluster, configure
        from clustrix.config import resolve_config

        # no kubeconfig and no namespace: the pod's ServiceAccount and namespace are used
        configure(cluster_type="kubernetes", python_executable=python, job_poll_interval=0.2)

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
    config = resolve_config()
    api = api_for(config)
    before = api.total_calls()
    # Kubernetes 1.20 drops completionMode from a dry-run Job: map falls back to a Job per task
    assert KubernetesScheduler().supports_indexed(api, "default") is False
    assert api.total_calls() == before + 1

    @cluster(max_parallel_jobs=4)
    def plus_one(x: int) -> int:
        return x + 1

    futures = plus_one.submit_map(range(10))
    assert [f.result(timeout=120) for f in futures] == list(range(1, 11))
    handle = futures[0].handle
    assert handle.data["indexed"] is False
    assert len(handle.data["jobs"]) == 4
