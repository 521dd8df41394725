"""The two tutorials of docs/kubernetes.md (examples/kubernetes_*.py), run as written against the testbed.

As written means the documented default: no ``image`` and no ``python_executable``, so the
node pulls ``python:3.11-slim`` and every pod pip-installs the reader's environment (that of
``pip install clustrix-core clustrix-k8s``: :data:`TUTORIAL_DISTRIBUTIONS`)
from the testbed's package index, which holds those wheels (downloaded once, cached).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from clustrix import configure
from tests.testbed.k8s import KubeCluster

pytestmark = pytest.mark.testbed_k8s

#: What a reader has installed (``pip install clustrix-core clustrix-k8s``): the environment the pip step
#: replicates. The tests' own (pytest, hypothesis, ...) is not the reader's, so ``replicate_distributions``
#: names this one.
TUTORIAL_DISTRIBUTIONS = ["clustrix-k8s"]


def pip_step_requirements() -> list[str]:
    """The pinned lines the tutorials' pip step installs (the conftest puts their wheels in the index)."""
    from clustrix.remote.environment.capture import capture_environment
    from clustrix.remote.environment.venv import requirements

    return requirements(capture_environment(TUTORIAL_DISTRIBUTIONS))


def _example(name: str) -> Iterator[ModuleType]:
    import cloudpickle

    module = importlib.import_module(f"examples.{name}")
    cloudpickle.register_pickle_by_value(module)  # pods cannot import the examples folder
    yield module
    cloudpickle.unregister_pickle_by_value(module)


@pytest.fixture
def as_written(k8s_config: dict[str, Any], kube: KubeCluster) -> dict[str, Any]:
    """The testbed's keys with the documented default image (``image=None``) and the reader's environment."""
    kube.serve_packages(pip_step_requirements())
    options = {k: v for k, v in k8s_config.items() if k != "image"}
    return {**options, "replicate_distributions": TUTORIAL_DISTRIBUTIONS}


@pytest.fixture
def training() -> Iterator[ModuleType]:
    yield from _example("kubernetes_training")


@pytest.fixture
def checkpointing() -> Iterator[ModuleType]:
    yield from _example("kubernetes_checkpoint")


def test_training_workers_with_cpu_and_memory_limits_average_to_the_true_weights(
    as_written: dict[str, Any], kube: KubeCluster, training: ModuleType
) -> None:
    configure(**as_written)
    weights = training.train(n_workers=4)
    assert all(abs(w - t) < 0.05 for w, t in zip(weights, training.TRUE_WEIGHTS, strict=True))
    from kubernetes import client

    jobs = client.BatchV1Api(kube.api()).list_namespaced_job("default", label_selector="app.kubernetes.io/managed-by")
    limits = [
        j.spec.template.spec.containers[0].resources.limits
        for j in jobs.items
        if j.metadata.annotations.get("clustrix.io/function") == "train_worker"
    ]
    assert limits and all(lim == {"cpu": "1", "memory": str(512 * 2**20)} for lim in limits)
    images = {
        j.spec.template.spec.containers[0].image
        for j in jobs.items
        if j.metadata.annotations.get("clustrix.io/function") == "train_worker"
    }
    assert images == {kube.default_image}


def test_a_crashed_pod_is_retried_and_resumes_from_its_checkpoint(
    as_written: dict[str, Any], tmp_path: Path, checkpointing: ModuleType
) -> None:
    volume = checkpointing.checkpoint_volume()
    # the testbed has no storage provisioner: a hostPath volume stands in for the PersistentVolumeClaim
    volume["volumes"] = [{"name": "checkpoints", "hostPath": {"path": str(tmp_path)}}]
    configure(**as_written, **volume)
    state = checkpointing.long_sum(100, "tutorial", crash_at=55)
    assert state == {"step": 100, "total": sum(range(100)), "resumed_from": 50, "attempts": 2}
