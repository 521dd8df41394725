"""The backend works as a user bound to exactly the Role of docs/kubernetes-rbac.yaml, and a missing verb is named."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from clustrix import cluster, configure
from clustrix_k8s.api import KubernetesPermissionError
from tests.testbed.k8s import LIMITED_USER, KubeCluster

pytestmark = pytest.mark.testbed_k8s
RBAC = Path(__file__).resolve().parents[2] / "docs" / "kubernetes-rbac.yaml"
NAMESPACE = "rbac-test"


def _documents(namespace: str) -> list[dict[str, Any]]:
    documents = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    for document in documents:
        document["metadata"]["namespace"] = namespace
        for subject in document.get("subjects") or []:
            if subject["kind"] == "User":
                subject["name"] = LIMITED_USER
            else:
                subject["namespace"] = namespace
    return documents


@pytest.fixture(scope="module")
def limited_namespace(kube: KubeCluster) -> str:
    from kubernetes import client, utils

    api = kube.api()
    client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
    kube.wait_service_account(NAMESPACE)
    for document in _documents(NAMESPACE):
        utils.create_from_dict(api, document, namespace=NAMESPACE)
    deadline = time.monotonic() + 30
    while not client.CoreV1Api(api).read_namespaced_service_account("clustrix-runner", NAMESPACE).secrets:
        assert time.monotonic() < deadline, "the runner ServiceAccount got no token"
        time.sleep(0.2)
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


def test_a_missing_verb_is_named_in_the_error(
    k8s_config: dict[str, Any], kube: KubeCluster, limited_namespace: str
) -> None:
    from kubernetes import client

    rbac = client.RbacAuthorizationV1Api(kube.api())
    (role,) = [
        d
        for d in _documents(limited_namespace)
        if d["kind"] == "Role" and d["metadata"]["name"] == "clustrix-submitter"
    ]
    rules = [
        {**rule, "verbs": [v for v in rule["verbs"] if v != "create"]} if rule["resources"] == ["jobs"] else rule
        for rule in role["rules"]
    ]
    rbac.patch_namespaced_role("clustrix-submitter", limited_namespace, {"rules": rules})
    try:
        configure(**{**k8s_config, "kubeconfig": str(kube.limited_kubeconfig)}, namespace=limited_namespace)

        @cluster
        def never() -> None: ...

        with pytest.raises(
            KubernetesPermissionError, match=r'needs the verb "create" on resource "jobs" \(apiGroups: \["batch"\]\)'
        ):
            never.submit()
    finally:
        rbac.patch_namespaced_role("clustrix-submitter", limited_namespace, {"rules": role["rules"]})
