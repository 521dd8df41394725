"""From inside a pod (in-cluster configuration), and how map is shaped on this server."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from clustrix import cluster, configure
from clustrix.config import resolve_config
from clustrix_k8s.api import api_for
from clustrix_k8s.scheduler import KubernetesScheduler
from tests.k8s import rbac_setup
from tests.testbed.k8s import KubeCluster

pytestmark = pytest.mark.testbed_k8s
NAMESPACE = "in-cluster"


@pytest.fixture(scope="module")
def pod_submitter(kube: KubeCluster) -> str:
    """A namespace with the documented Roles, the submitter Role bound to the ServiceAccount ``notebook``."""
    rbac_setup.apply(
        kube, NAMESPACE, {"kind": "ServiceAccount", "name": "notebook", "namespace": NAMESPACE}, accounts=("notebook",)
    )
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
