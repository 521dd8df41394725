"""End to end against the real API server and job controller (tests/testbed/k8s.py), one test per behaviour."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from clustrix import Job, cluster, configure
from clustrix.errors import JobCancelledError, JobError, JobOutOfMemoryError, JobTimeoutError
from tests.testbed.k8s import KubeCluster

pytestmark = pytest.mark.testbed_k8s


def _jobs_of(kube: KubeCluster, job_id: str, namespace: str = "default") -> list[Any]:
    from kubernetes import client

    batch = client.BatchV1Api(kube.api())
    return list(batch.list_namespaced_job(namespace, label_selector=f"clustrix.io/job-id={job_id}").items)


def _pods_of(kube: KubeCluster, job_id: str, namespace: str = "default") -> list[Any]:
    from kubernetes import client

    core = client.CoreV1Api(kube.api())
    return list(core.list_namespaced_pod(namespace, label_selector=f"clustrix.io/job-id={job_id}").items)


def test_a_call_runs_as_a_kubernetes_job_and_returns_its_value(k8s_config: dict[str, Any], kube: KubeCluster) -> None:
    configure(**k8s_config)

    @cluster(cores=1, memory="64MB")
    def where(x: int) -> tuple[int, str, str]:
        return x * 2, os.environ["CLUSTRIX_POD_NAME"], os.environ["CLUSTRIX_NAMESPACE"]

    future = where.submit(21)
    value, pod, namespace = future.result(timeout=120)
    assert value == 42
    assert namespace == "default"
    (job,) = _jobs_of(kube, future.job_id)
    assert pod.startswith(job.metadata.name)
    container = job.spec.template.spec.containers[0]
    assert container.resources.requests == {"cpu": "1", "memory": "64M"}
    # the payload travels in a Secret owned by the Job: never in args or env
    assert all(len(part) < 2000 for part in container.command)
    assert not any("payload" in (e.value or "") for e in container.env or [])


def test_map_of_100_calls_returns_results_in_order(k8s_config: dict[str, Any]) -> None:
    configure(**k8s_config)

    @cluster
    def square(x: int) -> int:
        return x * x

    assert square.map(range(100)) == [x * x for x in range(100)]


def test_a_remote_exception_comes_back_with_its_type_and_remote_traceback(k8s_config: dict[str, Any]) -> None:
    configure(**k8s_config)

    @cluster
    def fails(name: str) -> None:
        raise KeyError(f"no such thing: {name}")

    with pytest.raises(KeyError, match="no such thing: gizmo") as info:
        fails("gizmo")
    assert "fails" in str(info.value.__cause__)
    assert 'raise KeyError(f"no such thing: {name}")' in info.value.remote_traceback  # type: ignore[attr-defined]


def test_time_becomes_active_deadline_and_a_late_job_raises_job_timeout_error(
    k8s_config: dict[str, Any], kube: KubeCluster
) -> None:
    configure(**k8s_config)

    @cluster(time="00:00:02")
    def sleeps() -> None:
        time.sleep(60)

    future = sleeps.submit()
    with pytest.raises(JobTimeoutError, match="DeadlineExceeded"):
        future.result(timeout=120)
    (job,) = _jobs_of(kube, future.job_id)
    assert job.spec.active_deadline_seconds == 2


def test_a_container_over_its_memory_limit_raises_job_out_of_memory_error(k8s_config: dict[str, Any]) -> None:
    configure(**k8s_config)

    @cluster(memory_limit="150Mi")
    def hog() -> int:
        blocks = [bytearray(10 * 2**20) for _ in range(100)]
        return len(blocks)

    with pytest.raises(JobOutOfMemoryError, match="OOMKilled"):
        hog()


def test_backoff_limit_retries_a_failed_call_until_it_succeeds(k8s_config: dict[str, Any], kube: KubeCluster) -> None:
    marker = kube.directory / "attempts"
    marker.unlink(missing_ok=True)
    configure(**k8s_config)

    @cluster(backoff_limit=2)
    def flaky(path: str) -> int:
        with open(path, "a") as fh:
            fh.write("x")
        attempts = os.path.getsize(path)
        if attempts < 2:
            raise RuntimeError(f"attempt {attempts} fails")
        return attempts

    assert flaky(str(marker)) == 2


def test_backoff_limit_exceeded_raises_the_last_attempts_exception(
    k8s_config: dict[str, Any], kube: KubeCluster
) -> None:
    marker = kube.directory / "attempts-failing"
    marker.unlink(missing_ok=True)
    configure(**k8s_config)

    @cluster(backoff_limit=1)
    def always_fails(path: str) -> None:
        with open(path, "a") as fh:
            fh.write("x")
        raise ValueError(f"attempt {os.path.getsize(path)} failed")

    with pytest.raises(ValueError, match="attempt 2 failed"):
        always_fails(str(marker))


def test_cancel_deletes_the_job_and_its_pods(k8s_config: dict[str, Any], kube: KubeCluster) -> None:
    configure(**k8s_config)

    @cluster
    def forever() -> None:
        time.sleep(600)

    future = forever.submit()
    deadline = time.monotonic() + 60
    while not any(p.status.phase == "Running" for p in _pods_of(kube, future.job_id)):
        assert time.monotonic() < deadline, "the pod never ran"
        time.sleep(0.2)
    assert Job.attach(future.job_id).cancel()
    deadline = time.monotonic() + 60
    while _pods_of(kube, future.job_id) or _jobs_of(kube, future.job_id):
        assert time.monotonic() < deadline, "pods or the Job are still there after cancel"
        time.sleep(0.2)
    # the submitting process sees its Job gone: the call ends cancelled
    with pytest.raises(JobCancelledError, match="deleted"):
        future.result(timeout=60)


def test_arguments_larger_than_one_secret_travel_split_over_several(
    k8s_config: dict[str, Any], kube: KubeCluster
) -> None:
    configure(**k8s_config)

    @cluster
    def digest(data: bytes) -> str:
        import hashlib

        return hashlib.sha256(data).hexdigest()

    data = os.urandom(3 * 2**20)
    future = digest.submit(data)
    assert future.result(timeout=120) == hashlib.sha256(data).hexdigest()
    from kubernetes import client

    secrets = client.CoreV1Api(kube.api()).list_namespaced_secret(
        "default", label_selector=f"clustrix.io/job-id={future.job_id},clustrix.io/kind=payload"
    )
    assert len(secrets.items) == 5
    assert all(s.metadata.owner_references[0].kind == "Job" for s in secrets.items)


def test_a_50_mb_result_comes_back_intact(k8s_config: dict[str, Any]) -> None:
    configure(**k8s_config)

    @cluster
    def big() -> bytes:
        import random

        return random.Random(7).randbytes(50 * 10**6)

    import random

    data = big()
    assert len(data) == 50 * 10**6
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(random.Random(7).randbytes(50 * 10**6)).hexdigest()


def test_an_image_that_cannot_be_pulled_fails_fast_with_the_kubelets_message(k8s_config: dict[str, Any]) -> None:
    configure(**k8s_config, image="registry.invalid/nothing:1", pending_timeout=3)

    @cluster
    def never_runs() -> None: ...

    with pytest.raises(JobError, match=r"ImagePullBackOff|ErrImagePull.*registry.invalid/nothing:1"):
        never_runs.submit().result(timeout=120)


def test_a_pod_no_node_can_take_fails_fast_with_the_schedulers_message(k8s_config: dict[str, Any]) -> None:
    configure(**k8s_config, pending_timeout=3)

    @cluster(gpus=1)
    def needs_a_gpu() -> None: ...

    with pytest.raises(JobError, match=r"cannot be scheduled: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu"):
        needs_a_gpu.submit().result(timeout=120)


def test_a_result_is_fetched_by_a_new_process_after_the_submitter_died(
    k8s_config: dict[str, Any], tmp_path: Any
) -> None:
    script = textwrap.dedent(
        f"""
        import os, sys, time
        import cloudpickle
        from clustrix import cluster, configure
        configure(**{k8s_config!r})

        @cluster
        def slow():
            import time
            time.sleep(3)
            return "made by the pod"

        future = slow.submit()
        print(future.job_id, flush=True)
        os._exit(0)
        """
    )
    env = {**os.environ}
    submitted = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().splitlines()[-1]
    fetch = textwrap.dedent(
        f"""
        from clustrix import Job, configure
        configure(**{k8s_config!r})
        print(Job.attach({job_id!r}).result(timeout=120))
        """
    )
    fetched = subprocess.run([sys.executable, "-c", fetch], capture_output=True, text=True, env=env, timeout=180)
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout.strip() == "made by the pod"


def test_a_job_survives_an_api_server_restart_while_it_runs(k8s_config: dict[str, Any], kube: KubeCluster) -> None:
    configure(**k8s_config)

    @cluster
    def outlives(seconds: float) -> str:
        import time

        time.sleep(seconds)
        return "still here"

    future = outlives.submit(8)
    deadline = time.monotonic() + 60
    while not any(p.status.phase == "Running" for p in _pods_of(kube, future.job_id)):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    kube.restart_apiserver(down_seconds=2)
    assert future.result(timeout=180) == "still here"


def test_without_a_prepared_image_the_environment_is_pip_installed_at_container_start(
    k8s_config: dict[str, Any],
) -> None:
    from tests.testbed.system import apt_install

    system_python = "/usr/bin/python3"
    apt_install(["python3-pip"])
    probe = subprocess.run(
        [system_python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
    )
    if probe.stdout.strip() != str(sys.version_info[:2]):
        pytest.skip(f"{system_python} is Python {probe.stdout.strip()}, the tests run {sys.version_info[:2]}")
    # Debian's python3 has no cloudpickle: the pod can run the call only if the pip step installed it
    assert subprocess.run([system_python, "-c", "import cloudpickle"], capture_output=True).returncode != 0
    configure(
        **{**k8s_config, "python_executable": system_python},
        replicate_environment=True,
        replicate_distributions=["cloudpickle"],
    )

    @cluster
    def where() -> tuple[str, str]:
        import sys

        import cloudpickle

        return sys.executable, cloudpickle.__file__

    executable, module = where()
    assert executable == system_python
    assert not module.startswith("/usr/")
