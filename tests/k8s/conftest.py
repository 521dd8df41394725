"""Fixtures for the Kubernetes tests: a real one-node cluster (tests/testbed/k8s.py), started once."""

from __future__ import annotations

import shutil
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.testbed.k8s import KubeCluster, start_k8s
from tests.testbed.system import unavailable

_build_error: list[BaseException] = []


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build (or find cached) the Kubernetes binaries and the testbed's images before any test runs.

    A cold build takes minutes (see tests/testbed/k8s_build.py and images.py); done here, it
    does not count against the first test's timeout. A failure is reported by the ``kube`` fixture.
    """
    if not any(item.get_closest_marker("testbed_k8s") for item in session.items):
        return
    from tests.testbed.images import build_images
    from tests.testbed.k8s import index_url
    from tests.testbed.k8s_build import build

    try:
        started = time.monotonic()
        say = lambda message: sys.stderr.write(f"[k8s testbed] {message}\n")  # noqa: E731
        where = build(log=say)
        build_images(index_url(), log=say)
        from tests.testbed.images import wheels_for

        # a test module's pip_step_requirements(): the wheels its pods' pip step (image=None) needs in the
        # testbed's package index, downloaded here once (cached by name and version)
        for module in {item.module for item in session.items if hasattr(item.module, "pip_step_requirements")}:
            wheels_for(module.pip_step_requirements())
        sys.stderr.write(f"[k8s testbed] binaries in {where}, images built ({time.monotonic() - started:.1f} s)\n")
    except Exception as exc:  # noqa: BLE001 - reported (and in CI failed) by the fixture
        _build_error.append(exc)


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeCluster]:
    """The one-node cluster in its network namespace, its API server at 127.0.0.1 through a gateway."""
    if _build_error:
        unavailable(f"building the Kubernetes control plane failed: {_build_error[0]!r}")
    started = time.monotonic()
    # not under pytest's basetemp: another session's pytest prunes old basetemps while this stack runs
    directory = Path(tempfile.mkdtemp(prefix="clustrix-k8s-", dir="/var/tmp"))
    try:
        cluster = start_k8s(directory)
    except Exception as exc:
        unavailable(f"Kubernetes testbed: {type(exc).__name__}: {exc}")
        raise
    sys.stderr.write(f"\n[k8s testbed] up in {time.monotonic() - started:.1f} s at {cluster.server}\n")
    yield cluster
    cluster.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def k8s_config(kube: KubeCluster) -> dict[str, Any]:
    """Configuration keys that send calls to the testbed; pods run the prepared image (Debian's Python + cloudpickle).

    No ``python_executable``: the image's own ``python`` runs the calls, as for a user.
    """
    return {
        "cluster_type": "kubernetes",
        "kubeconfig": str(kube.kubeconfig),
        "image": kube.prepared_image,
        "job_poll_interval": 0.2,
    }


def with_clustrix_in_pods(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` whose pods can ``import clustrix`` (and the kubernetes client), as an image built for them would.

    The testbed's images hold Debian's Python and cloudpickle only; code that imports clustrix
    itself in the pod (a module with ``@cluster`` functions, a pod that submits) gets this test
    environment's site-packages, mounted read-only and put on ``PYTHONPATH``.
    """
    site = sysconfig.get_paths()["purelib"]
    variables = {**options.get("environment_variables", {}), "PYTHONPATH": "/opt/client"}
    return {
        **options,
        "volumes": [*options.get("volumes", []), {"name": "client", "hostPath": {"path": site}}],
        "volume_mounts": [
            *options.get("volume_mounts", []),
            {"name": "client", "mountPath": "/opt/client", "readOnly": True},
        ],
        "environment_variables": variables,
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
