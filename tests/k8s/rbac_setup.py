"""Apply docs/kubernetes-rbac.yaml to a test namespace, bound to a chosen subject (the tests of the documented Role)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from tests.testbed.k8s import KubeCluster

RBAC = Path(__file__).resolve().parents[2] / "docs" / "kubernetes-rbac.yaml"


def documents(namespace: str, submitter: dict[str, str]) -> list[dict[str, Any]]:
    """The file's objects in ``namespace``, the submitter RoleBinding's subject replaced by ``submitter``."""
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    for document in docs:
        document["metadata"]["namespace"] = namespace
        for subject in document.get("subjects") or []:
            if subject["kind"] == "User":
                subject.clear()
                subject.update(submitter)
            else:
                subject["namespace"] = namespace
    return docs


def apply(kube: KubeCluster, namespace: str, submitter: dict[str, str], accounts: tuple[str, ...] = ()) -> None:
    """Create ``namespace``, the ServiceAccounts ``accounts`` and the file's objects; wait for the tokens."""
    from kubernetes import client, utils

    api = kube.api()
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": namespace}})
    kube.wait_service_account(namespace)
    for account in accounts:
        core.create_namespaced_service_account(namespace, {"metadata": {"name": account}})
    for document in documents(namespace, submitter):
        utils.create_from_dict(api, document, namespace=namespace)
    deadline = time.monotonic() + 30
    while not all(core.read_namespaced_service_account(n, namespace).secrets for n in (*accounts, "clustrix-runner")):
        assert time.monotonic() < deadline, "the ServiceAccounts got no token"
        time.sleep(0.2)
