"""The backend works as a user bound to exactly the Role of docs/kubernetes-rbac.yaml, and a missing verb is named."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clustrix import cluster, configure
from clustrix.errors import JobError
from clustrix_k8s.api import KubernetesPermissionError
from tests.k8s import rbac_setup
from tests.testbed.k8s import LIMITED_USER, KubeCluster

pytestmark = pytest.mark.testbed_k8s
NAMESPACE = "rbac-test"


SUBMITTER = {"kind": "User", "name": LIMITED_USER, "apiGroup": "rbac.authorization.k8s.io"}


@pytest.fixture(scope="module")
def limited_namespace(kube: KubeCluster) -> str:
    rbac_setup.apply(kube, NAMESPACE, SUBMITTER)
    return NAMESPACE


def test_a_user_with_only_the_documented_role_runs_calls_and_maps(
    k8s_config: dict[str, Any], kube: KubeCluster, limited_namespace: str
) -> None:
    configure(**{**k8s_config, "kubeconfig": str(kube.limited_kubeconfig)}, namespace=limited_namespace)

    @cluster
    def double(x: int) -> int:
        return 2 * x

    @cluster
    def fails() -> None:
        raise ArithmeticError("as the Role allows")

    assert double(4) == 8
    assert double.map(range(5)) == [0, 2, 4, 6, 8]
    with pytest.raises(ArithmeticError, match="as the Role allows"):
        fails()
    future = double.submit(1)
    assert future.cancel() or future.done()
    # a pipeline: the dependant's pods read their inputs with the documented runner Role
    assert double.map(double.submit_map(range(3))) == [0, 4, 8]


@contextlib.contextmanager
def documented_role_changed(
    kube: KubeCluster, namespace: str, name: str, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
) -> Iterator[None]:
    """The Role ``name`` of docs/kubernetes-rbac.yaml with its rules changed by ``change``, restored after."""
    from kubernetes import client

    rbac = client.RbacAuthorizationV1Api(kube.api())
    (role,) = [
        d for d in rbac_setup.documents(namespace, SUBMITTER) if d["kind"] == "Role" and d["metadata"]["name"] == name
    ]
    rbac.patch_namespaced_role(name, namespace, {"rules": change(role["rules"])})
    try:
        yield
    finally:
        rbac.patch_namespaced_role(name, namespace, {"rules": role["rules"]})


def test_a_runner_role_without_the_verbs_inputs_need_fails_the_dependant_naming_the_verb(
    k8s_config: dict[str, Any], kube: KubeCluster, limited_namespace: str
) -> None:
    older = [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}]  # before pipelines
    with documented_role_changed(kube, limited_namespace, "clustrix-runner", lambda _rules: older):
        configure(**{**k8s_config, "kubeconfig": str(kube.limited_kubeconfig)}, namespace=limited_namespace)

        @cluster
        def plus_one(x: int) -> int:
            return x + 1

        first = plus_one.submit(1)
        second = plus_one.submit(first)
        assert first.result(timeout=300) == 2
        with pytest.raises(JobError) as info:
            second.result(timeout=300)
        text = str(info.value)
        assert "ServiceAccount may not list jobs" in text and "clustrix-runner Role" in text, text


def test_a_missing_verb_is_named_in_the_error(
    k8s_config: dict[str, Any], kube: KubeCluster, limited_namespace: str
) -> None:
    def without_create_jobs(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {**rule, "verbs": [v for v in rule["verbs"] if v != "create"]} if rule["resources"] == ["jobs"] else rule
            for rule in rules
        ]

    with documented_role_changed(kube, limited_namespace, "clustrix-submitter", without_create_jobs):
        configure(**{**k8s_config, "kubeconfig": str(kube.limited_kubeconfig)}, namespace=limited_namespace)

        @cluster
        def never() -> None: ...

        with pytest.raises(
            KubernetesPermissionError, match=r'needs the verb "create" on resource "jobs" \(apiGroups: \["batch"\]\)'
        ):
            never.submit()
