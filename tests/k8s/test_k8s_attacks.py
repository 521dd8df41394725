"""A co-user of the namespace, bound to the documented Role, against a user's jobs (docs/security.md, Kubernetes).

The user is ``clustrix-limited``; the co-user ``mallory`` is a ServiceAccount bound to the
same ``clustrix-submitter`` Role of docs/kubernetes-rbac.yaml, and ``clustrix-runner``'s
token stands for "any clustrix pod's token". What the Role cannot stop, and the docs
say: whoever may create Jobs can mount any Secret of the namespace in a pod of hers.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from clustrix import Job, cluster, configure
from tests.k8s import rbac_setup
from tests.testbed.k8s import LIMITED_USER, KubeCluster, render_kubeconfig

pytestmark = pytest.mark.testbed_k8s
NAMESPACE = "shared-ns"
SUBMITTER = {"kind": "User", "name": LIMITED_USER, "apiGroup": "rbac.authorization.k8s.io"}


def _token(kube: KubeCluster, account: str) -> str:
    from kubernetes import client

    core = client.CoreV1Api(kube.api())
    (ref,) = core.read_namespaced_service_account(account, NAMESPACE).secrets
    return base64.b64decode(core.read_namespaced_secret(ref.name, NAMESPACE).data["token"]).decode()


def _client_as(kube: KubeCluster, account: str, tmp_path: Path) -> Any:
    from kubernetes import client, config

    path = tmp_path / f"kubeconfig-{account}"
    path.write_text(render_kubeconfig(kube.server, kube.ca_file, _token(kube, account), account, NAMESPACE))
    return client.CoreV1Api(config.new_client_from_config(str(path)))


@pytest.fixture(scope="module")
def shared_namespace(kube: KubeCluster) -> str:
    from kubernetes import client

    rbac_setup.apply(kube, NAMESPACE, SUBMITTER, accounts=("mallory",))
    client.RbacAuthorizationV1Api(kube.api()).create_namespaced_role_binding(
        NAMESPACE,
        {
            "metadata": {"name": "clustrix-submitter-mallory"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "clustrix-submitter"},
            "subjects": [{"kind": "ServiceAccount", "name": "mallory", "namespace": NAMESPACE}],
        },
    )
    return NAMESPACE


@pytest.fixture
def as_user(k8s_config: dict[str, Any], kube: KubeCluster, shared_namespace: str) -> None:
    configure(**{**k8s_config, "kubeconfig": str(kube.limited_kubeconfig)}, namespace=shared_namespace)


def _status(call: Any) -> int:
    from kubernetes.client.exceptions import ApiException

    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


def test_a_co_user_with_the_documented_role_can_neither_read_nor_rewrite_a_jobs_payload(
    as_user: None, kube: KubeCluster, tmp_path: Path
) -> None:
    @cluster
    def secret_sum(a: int, b: int) -> int:
        return a + b

    future = secret_sum.submit(40, 2)
    assert future.result(timeout=120) == 42
    mallory = _client_as(kube, "mallory", tmp_path)
    payload = f"clustrix-{future.job_id}-payload-0".lower()
    assert _status(lambda: mallory.read_namespaced_secret(payload, NAMESPACE)) == 403
    assert _status(lambda: mallory.list_namespaced_secret(NAMESPACE)) == 403
    assert _status(lambda: mallory.patch_namespaced_secret(payload, NAMESPACE, {"data": {"bootstrap.py": ""}})) == 403
    assert _status(lambda: mallory.delete_namespaced_secret(payload, NAMESPACE)) == 403
    # what she may read, the results, she cannot read in the clear
    results = mallory.list_namespaced_config_map(NAMESPACE, label_selector=f"clustrix.io/job-id={future.job_id}")
    assert results.items and all(
        pickle.dumps(42) not in base64.b64decode(value) for item in results.items for value in item.binary_data.values()
    )


class _Planted:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_forged_newer_result_neither_hides_the_real_one_nor_is_unpickled(
    as_user: None, kube: KubeCluster, tmp_path: Path
) -> None:
    @cluster
    def double(x: int) -> int:
        return 2 * x

    future = double.submit(21)
    assert future.result(timeout=120) == 42
    marker = tmp_path / "forged-result-ran"
    planted = pickle.dumps(_Planted(str(marker)))
    forged = {
        "0.0.1": planted,
        "0.nonce": b"n" * 16,
        "0.mac": b"0" * 64,  # no key: a guess
    }
    # any clustrix pod's token (a co-user runs a Job as clustrix-runner) may create result objects
    runner = _client_as(kube, "clustrix-runner", tmp_path)
    meta = {
        "labels": {
            "clustrix.io/job-id": future.job_id,
            "clustrix.io/kind": "result",
            "clustrix.io/task": "0",
            "app.kubernetes.io/managed-by": "clustrix",
        },
        "annotations": {
            "clustrix.io/attempt": "forged-pod",
            "clustrix.io/stamp": str(time.time_ns() + 10**12),
            "clustrix.io/objects": "1",
            "clustrix.io/secrets": "1",
        },
    }
    encoded = {k: base64.b64encode(v).decode() for k, v in forged.items()}
    made = [
        _status(
            lambda: runner.create_namespaced_config_map(
                NAMESPACE, {"metadata": {**meta, "name": "forged-result"}, "binaryData": encoded}
            )
        ),
        _status(
            lambda: runner.create_namespaced_secret(
                NAMESPACE, {"metadata": {**meta, "name": "forged-result"}, "data": encoded}
            )
        ),
    ]
    assert 201 in made or 200 in made, made
    assert Job.attach(future.job_id).result(timeout=60) == 42
    assert not marker.exists()


def test_environment_variable_values_reach_the_pod_but_no_job_or_pod_spec(as_user: None, kube: KubeCluster) -> None:
    from kubernetes import client

    value = "s3cret-api-token-for-the-pod"

    @cluster(environment_variables={"API_TOKEN": value})
    def token() -> str:
        return os.environ["API_TOKEN"]

    future = token.submit()
    assert future.result(timeout=120) == value
    api = kube.api()
    selector = f"clustrix.io/job-id={future.job_id}"
    jobs = client.BatchV1Api(api).list_namespaced_job(NAMESPACE, label_selector=selector).items
    pods = client.CoreV1Api(api).list_namespaced_pod(NAMESPACE, label_selector=selector).items
    assert jobs and pods
    specs = json.dumps(api.sanitize_for_serialization([*jobs, *pods]))
    assert "API_TOKEN" in specs and value not in specs


def _doctor(kubeconfig: Path, namespace: str, home: Path) -> tuple[int, dict[str, Any]]:
    env = {
        **os.environ,
        "HOME": str(home),
        "CLUSTRIX_CONFIG": str(home / "no-config.toml"),
        "XDG_DATA_HOME": str(home / "data"),
        "CLUSTRIX_CLUSTER_TYPE": "kubernetes",
        "CLUSTRIX_KUBECONFIG": str(kubeconfig),
        "CLUSTRIX_NAMESPACE": namespace,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "clustrix.cli", "doctor", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.stdout.strip(), proc.stderr
    report = json.loads(proc.stdout)
    return proc.returncode, {c["check"]: c for c in report["checks"]}


def test_doctor_checks_the_users_permissions_and_warns_of_a_shared_namespace(
    kube: KubeCluster, shared_namespace: str, tmp_path: Path
) -> None:
    from kubernetes import client

    code, checks = _doctor(kube.limited_kubeconfig, shared_namespace, tmp_path)
    assert checks["kubernetes permissions"]["ok"] and not checks["kubernetes permissions"].get("warning")
    own = checks["kubernetes namespace of your own"]
    assert own.get("warning") and "cannot tell who else" in own["detail"]
    client.RbacAuthorizationV1Api(kube.api()).create_namespaced_role_binding(
        shared_namespace,
        {
            "metadata": {"name": "clustrix-submitter-bob"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "clustrix-submitter"},
            "subjects": [{"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"}],
        },
    )
    _code, checks = _doctor(kube.kubeconfig, shared_namespace, tmp_path)  # the admin may read RoleBindings
    own = checks["kubernetes namespace of your own"]
    assert own.get("warning") and "User bob" in own["detail"] and "User clustrix-limited" in own["detail"]
    _code, checks = _doctor(kube.limited_kubeconfig, "default", tmp_path)
    assert (
        not checks["kubernetes permissions"]["ok"]
        and '"create" on "jobs"' in checks["kubernetes permissions"]["detail"]
    )
    assert code == 0
