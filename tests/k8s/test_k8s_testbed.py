"""The testbed is a real node: pods run in containers of images pulled from its registry, on its pod network."""

from __future__ import annotations

import time
from typing import Any

import pytest

from clustrix import Job, cluster, configure
from tests.testbed.k8s import KubeCluster

pytestmark = pytest.mark.testbed_k8s


def _wait_phase(core: Any, name: str, phases: set[str], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        pod = core.read_namespaced_pod(name, "default")
        if pod.status.phase in phases:
            return pod
        assert time.monotonic() < deadline, f"pod {name} stayed {pod.status.phase}"
        time.sleep(0.2)


def _wait_gone(kube: KubeCluster, container: str, timeout: float = 30) -> None:
    """Wait until the node runs no task of ``container`` (containerd's own view, not the API's)."""
    deadline = time.monotonic() + timeout
    while container in kube.containers():
        assert time.monotonic() < deadline, f"container {container} still runs on the node"
        time.sleep(0.2)


def test_env_from_secrets_config_maps_and_fields_and_a_config_map_volume_reach_the_process(kube: KubeCluster) -> None:
    from kubernetes import client

    core = client.CoreV1Api(kube.api())
    core.create_namespaced_secret("default", {"metadata": {"name": "tb-secret"}, "stringData": {"token": "s3cret"}})
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "tb-config"}, "data": {"mode": "fast", "settings.ini": "[a]\nb = 1\n"}}
    )
    script = (
        "import os; print(os.environ['TOKEN'], os.environ['MODE'], os.environ['POD'], os.environ['PLAIN']);"
        "print(open('/etc/tb-config/settings.ini').read().strip())"
    )
    pod = {
        "metadata": {"name": "tb-env", "labels": {"app": "tb"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": kube.default_image,  # python:3.11-slim, pulled through the docker.io mirror
                    "command": ["python", "-c", script],
                    "env": [
                        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "tb-secret", "key": "token"}}},
                        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "tb-config", "key": "mode"}}},
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "PLAIN", "value": "v-$(MODE)"},
                    ],
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/tb-config"}],
                }
            ],
            "volumes": [{"name": "config", "configMap": {"name": "tb-config"}}],
        },
    }
    core.create_namespaced_pod("default", pod)
    finished = _wait_phase(core, "tb-env", {"Succeeded", "Failed"})
    log = core.read_namespaced_pod_log("tb-env", "default")  # through the API server's proxy to the kubelet
    assert finished.status.phase == "Succeeded", log
    assert finished.status.container_statuses[0].state.terminated.exit_code == 0
    assert log.splitlines() == ["s3cret fast tb-env v-fast", "[a]", "b = 1"]


def test_exit_codes_active_deadline_and_deletion_end_containers_as_on_a_node(kube: KubeCluster) -> None:
    from kubernetes import client

    core = client.CoreV1Api(kube.api())

    def pod(name: str, code: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": kube.default_image, "command": ["python", "-c", code]}],
            },
        }

    late = pod("tb-late", "import time; time.sleep(600)")
    late["spec"]["activeDeadlineSeconds"] = 1
    core.create_namespaced_pod("default", late)
    core.create_namespaced_pod("default", pod("tb-exit", "raise SystemExit(7)"))
    core.create_namespaced_pod("default", pod("tb-sleep", "import time; time.sleep(600)"))
    failed = _wait_phase(core, "tb-exit", {"Succeeded", "Failed"})
    assert (failed.status.phase, failed.status.container_statuses[0].state.terminated.exit_code) == ("Failed", 7)
    ended = _wait_phase(core, "tb-late", {"Succeeded", "Failed"})
    assert (ended.status.phase, ended.status.reason) == ("Failed", "DeadlineExceeded")
    # the kubelet kills the container (its status may keep saying running: 1.20 stops updating a failed pod)
    late_container = ended.status.container_statuses[0].container_id.split("://")[1]
    _wait_gone(kube, late_container)
    running = _wait_phase(core, "tb-sleep", {"Running"})
    runtime, container = running.status.container_statuses[0].container_id.split("://")
    assert runtime == "containerd" and container in kube.containers()
    core.delete_namespaced_pod("tb-sleep", "default")
    deadline = time.monotonic() + 30
    while any(p.metadata.name == "tb-sleep" for p in core.list_namespaced_pod("default").items):
        assert time.monotonic() < deadline, "the deleted pod was never removed"
        time.sleep(0.2)
    _wait_gone(kube, container)


def test_job_logs_come_from_the_pod_through_the_api_server(k8s_config: dict[str, Any]) -> None:
    configure(**k8s_config)

    @cluster
    def chatty() -> int:
        print("hello from the pod", flush=True)
        return 1

    future = chatty.submit()
    assert future.result(timeout=120) == 1
    assert "hello from the pod" in Job.attach(future.job_id).logs()


def test_a_pod_gets_an_address_of_the_pod_network_that_stays_off_the_machines_interfaces(kube: KubeCluster) -> None:
    import ipaddress
    import subprocess

    from kubernetes import client

    from tests.testbed.k8s import POD_CIDR

    core = client.CoreV1Api(kube.api())
    core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "tb-net"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": kube.default_image, "command": ["sleep", "30"]}],
            },
        },
    )
    pod = _wait_phase(core, "tb-net", {"Running"})
    assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(POD_CIDR)
    host = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    assert pod.status.pod_ip not in host and pod.status.host_ip not in host
    core.delete_namespaced_pod("tb-net", "default", grace_period_seconds=0)
