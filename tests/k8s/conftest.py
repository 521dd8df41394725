"""Fixtures for the Kubernetes tests: the real control plane with the project's kubelet, started once."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.testbed.k8s import KubeCluster, start_k8s
from tests.testbed.system import unavailable


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """etcd, kube-apiserver, kube-controller-manager and the local kubelet on 127.0.0.1."""
    import time

    started = time.monotonic()
    try:
        cluster = start_k8s(tmp_path_factory.mktemp("k8s"))
    except Exception as exc:
        unavailable(f"Kubernetes testbed: {type(exc).__name__}: {exc}")
        raise
    sys.stderr.write(f"\n[k8s testbed] up in {time.monotonic() - started:.1f} s at {cluster.server}\n")
    yield cluster
    cluster.stop()


@pytest.fixture
def k8s_config(kube: KubeCluster) -> dict[str, Any]:
    """Configuration keys that send calls to the testbed; pods run this interpreter (it has cloudpickle)."""
    return {
        "cluster_type": "kubernetes",
        "kubeconfig": str(kube.kubeconfig),
        "python_executable": sys.executable,
        "job_poll_interval": 0.2,
    }


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    from clustrix_k8s.api import forget_clients

    forget_clients()
    yield
    forget_clients()


@pytest.fixture(autouse=True)
def _pickle_test_functions_by_value(request: pytest.FixtureRequest) -> Iterator[None]:
    """Pods cannot import test modules (pytest names them by file), so ship their functions whole."""
    import cloudpickle

    module = request.module
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)


def admin_api(kube: KubeCluster) -> Any:
    from kubernetes import client

    return client.ApiClient(kube.api().configuration)


def here() -> Path:
    return Path(__file__).parent
