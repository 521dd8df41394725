"""Fixtures for the Kubernetes tests: the real control plane with the project's kubelet, started once."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.testbed.k8s import KubeCluster, start_k8s
from tests.testbed.system import unavailable

_build_error: list[BaseException] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build (or find cached) the control-plane binaries before any test runs.

    A cold build takes minutes (see tests/testbed/k8s_build.py); done here, it does not
    count against the first test's timeout. A failure is reported by the ``kube`` fixture.
    """
    if not any(item.get_closest_marker("testbed_k8s") for item in session.items):
        return
    from tests.testbed.k8s_build import build

    try:
        started = time.monotonic()
        where = build(log=lambda message: sys.stderr.write(f"[k8s testbed] {message}\n"))
        sys.stderr.write(f"[k8s testbed] control-plane binaries in {where} ({time.monotonic() - started:.1f} s)\n")
    except Exception as exc:  # noqa: BLE001 - reported (and in CI failed) by the fixture
        _build_error.append(exc)


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """etcd, kube-apiserver, kube-controller-manager and the local kubelet on 127.0.0.1."""
    if _build_error:
        unavailable(f"building the Kubernetes control plane failed: {_build_error[0]!r}")
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
