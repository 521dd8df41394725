"""End to end against the real API server and job controller (tests/testbed/k8s.py), one test per behaviour."""

from __future__ import annotations

import errno
import hashlib
import os
import re
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
    # the pod's traceback names the function and its line (the test file's source is not in the pod's image)
    assert ", in fails\nKeyError: 'no such thing: gizmo'" in info.value.remote_traceback  # type: ignore[attr-defined]


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
    assert job.spec.template.spec.active_deadline_seconds == 2


def test_a_container_over_its_memory_limit_raises_job_out_of_memory_error(k8s_config: dict[str, Any]) -> None:
    configure(**k8s_config)

    @cluster(memory_limit="150Mi")
    def hog() -> int:
        blocks = [bytearray(10 * 2**20) for _ in range(100)]
        return len(blocks)

    with pytest.raises(JobOutOfMemoryError, match="OOMKilled"):
        hog()


def _host_folder(kube: KubeCluster, name: str) -> dict[str, Any]:
    """Options mounting a fresh folder of this machine at ``/host`` in the pods (a hostPath volume)."""
    folder = kube.directory / name
    folder.mkdir()
    return {
        "volumes": [{"name": "host", "hostPath": {"path": str(folder)}}],
        "volume_mounts": [{"name": "host", "mountPath": "/host"}],
    }


def test_backoff_limit_retries_a_failed_call_until_it_succeeds(k8s_config: dict[str, Any], kube: KubeCluster) -> None:
    marker = "/host/attempts"  # kept across the pods of the retries
    configure(**k8s_config, **_host_folder(kube, "retries"))

    @cluster(backoff_limit=2)
    def flaky(path: str) -> int:
        with open(path, "a") as fh:
            fh.write("x")
        attempts = os.path.getsize(path)
        if attempts < 2:
            raise RuntimeError(f"attempt {attempts} fails")
        return attempts

    assert flaky(marker) == 2


def test_backoff_limit_exceeded_raises_the_last_attempts_exception(
    k8s_config: dict[str, Any], kube: KubeCluster
) -> None:
    marker = "/host/attempts"
    configure(**k8s_config, **_host_folder(kube, "retries-failing"))

    @cluster(backoff_limit=1)
    def always_fails(path: str) -> None:
        with open(path, "a") as fh:
            fh.write("x")
        raise ValueError(f"attempt {os.path.getsize(path)} failed")

    with pytest.raises(ValueError, match="attempt 2 failed"):
        always_fails(marker)


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
    # the call's python is the container's PID 1, which has no default SIGTERM action: the bootstrap
    # ends on SIGTERM, so the pod goes well before the kubelet's SIGKILL at the grace period (30 s)
    deadline = time.monotonic() + 25
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


def test_an_image_that_cannot_be_pulled_fails_fast_with_the_kubelets_message(
    k8s_config: dict[str, Any], kube: KubeCluster
) -> None:
    missing = f"{kube.registry}/nothing:1"  # the testbed's registry answers: no such image
    configure(**{**k8s_config, "image": missing}, pending_timeout=3)

    @cluster
    def never_runs() -> None: ...

    with pytest.raises(JobError, match=rf"(ImagePullBackOff|ErrImagePull).*{re.escape(missing)}"):
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


def test_without_an_image_the_default_python_slim_image_is_pulled_and_the_pip_step_installs_cloudpickle(
    k8s_config: dict[str, Any], kube: KubeCluster
) -> None:
    # the documented default: image=None, no python_executable; the pod pulls python:3.11-slim (here
    # from the testbed's docker.io mirror), which has no cloudpickle, and pip installs it at start
    from clustrix.remote.environment.capture import capture_environment
    from clustrix.remote.environment.venv import requirements

    options = {k: v for k, v in k8s_config.items() if k != "image"}
    configure(**options, replicate_distributions=["cloudpickle"])
    # pods have no way out to PyPI: the testbed's index (the image's pip.conf) stands in for a site's mirror
    kube.serve_packages(requirements(capture_environment(["cloudpickle"])))

    @cluster
    def where() -> tuple[str, str, str]:
        import sys

        import cloudpickle

        return sys.executable, sys.version, cloudpickle.__file__

    future = where.submit()
    executable, version, module = future.result(timeout=180)
    assert executable == "/usr/bin/python"  # the image's python (python-is-python3), not this interpreter
    assert version.startswith(kube.python_version)
    assert not module.startswith("/usr/")  # installed at container start, into a temporary folder
    jobs = _jobs_of(kube, future.job_id)
    assert [j.spec.template.spec.containers[0].image for j in jobs] == [kube.default_image]


def test_without_egress_the_pip_step_fails_fast_with_an_error_naming_image_as_the_fix(
    k8s_config: dict[str, Any],
) -> None:
    # the documented default, in a pod that cannot reach its index: PIP_INDEX_URL (over the image's
    # pip.conf) names the real PyPI, which no pod of the testbed can reach (no way out of its namespace)
    options = {k: v for k, v in k8s_config.items() if k != "image"}
    configure(
        **options,
        replicate_distributions=["cloudpickle"],
        environment_variables={"PIP_INDEX_URL": "https://pypi.org/simple/"},
    )

    @cluster
    def one() -> int:
        return 1

    started = time.monotonic()
    with pytest.raises(JobError) as caught:
        one.submit().result(timeout=150)
    message = str(caught.value)
    assert "pip step could not install" in message and "image=" in message and "PIP_INDEX_URL" in message
    assert time.monotonic() - started < 75, "pip must give up after one short retry"


# ---- what only a real node shows ------------------------------------------------------------


def test_a_cpu_limit_is_enforced_by_the_containers_cgroup(k8s_config: dict[str, Any]) -> None:
    configure(**k8s_config)

    @cluster(cpu_limit="200m")
    def busy() -> float:
        import time

        wall, cpu = time.monotonic(), time.process_time()
        while time.monotonic() - wall < 3:
            pass
        return (time.process_time() - cpu) / (time.monotonic() - wall)

    share = busy()
    assert share < 0.45, f"a busy loop under a 200m limit got {share:.2f} of a core"


def test_an_image_whose_user_is_not_root_runs_calls_with_a_home_it_cannot_write(
    k8s_config: dict[str, Any], kube: KubeCluster
) -> None:
    configure(**{**k8s_config, "image": kube.image("nonroot")})

    @cluster
    def who() -> tuple[int, bool]:
        import os

        return os.getuid(), os.access(os.environ["HOME"], os.W_OK)

    assert who() == (1000, False)


def test_a_read_only_root_filesystem_runs_calls_and_the_pip_step_as_a_non_root_user(
    k8s_config: dict[str, Any], kube: KubeCluster
) -> None:
    from clustrix.remote.environment.capture import capture_environment
    from clustrix.remote.environment.venv import requirements

    @cluster
    def writes() -> tuple[int, str, int]:
        import errno
        import os
        import tempfile

        try:
            open("/tmp/clustrix-probe", "w").close()  # /tmp is world-writable in the image, unless read-only
            refused = 0
        except OSError as exc:
            refused = exc.errno or 0
        with tempfile.NamedTemporaryFile() as scratch:  # where clustrix points TMPDIR: its emptyDir
            return os.getuid(), scratch.name, refused if refused == errno.EROFS else -refused

    read_only = {"readOnlyRootFilesystem": True, "runAsNonRoot": True}
    configure(**{**k8s_config, "image": kube.image("nonroot")}, security_context=read_only)
    uid, scratch, refused = writes()
    assert (uid, refused) == (1000, errno.EROFS)
    assert scratch.startswith("/var/run/clustrix/scratch/")
    # the documented default (pip step into a temporary folder) in the same read-only pod, as user 1000
    options = {k: v for k, v in k8s_config.items() if k != "image"}
    configure(
        **options,
        replicate_distributions=["cloudpickle"],
        security_context={**read_only, "runAsUser": 1000, "runAsGroup": 1000},
    )
    kube.serve_packages(requirements(capture_environment(["cloudpickle"])))
    uid, scratch, refused = writes()
    assert (uid, refused) == (1000, errno.EROFS) and scratch.startswith("/var/run/clustrix/scratch/")


def test_an_image_entrypoint_does_not_swallow_the_pods_command(k8s_config: dict[str, Any], kube: KubeCluster) -> None:
    configure(**{**k8s_config, "image": kube.image("entrypoint")})

    @cluster
    def plus(a: int, b: int) -> int:
        return a + b

    assert plus(2, 3) == 5


def test_an_image_from_a_registry_that_wants_a_login_is_pulled_with_the_pull_secret(
    k8s_config: dict[str, Any], kube: KubeCluster
) -> None:
    import base64
    import json

    from kubernetes import client

    private = f"{kube.auth_registry}/clustrix-testbed/python:{kube.python_version}"
    login = base64.b64encode(f"{kube.registry_user}:{kube.registry_password}".encode()).decode()
    config = {"auths": {kube.auth_registry: {"auth": login}}}
    client.CoreV1Api(kube.api()).create_namespaced_secret(
        "default",
        {
            "metadata": {"name": "testbed-regcred"},
            "type": "kubernetes.io/dockerconfigjson",
            "stringData": {".dockerconfigjson": json.dumps(config)},
        },
    )

    @cluster
    def one() -> int:
        return 1

    configure(**{**k8s_config, "image": private}, pending_timeout=5)
    with pytest.raises(JobError, match=r"(ImagePullBackOff|ErrImagePull).*(401|[Uu]nauthorized)"):
        one.submit().result(timeout=120)
    configure(**{**k8s_config, "image": private}, image_pull_secrets=["testbed-regcred"])
    assert one() == 1


def test_retries_run_a_call_that_raised_again_in_its_pod_in_a_map_of_50(k8s_config: dict[str, Any]) -> None:
    """``retries`` (issue 21): the runner in the pod runs the call again; ``backoff_limit`` stays 0."""
    configure(**k8s_config)

    def fails_once(x: int, token: str) -> tuple[int, int]:
        path = f"/tmp/clustrix-runs-{token}-{x}"  # the pod's own /tmp: the retry runs in the same pod
        with open(path, "a") as fh:
            fh.write("x")
        runs = os.path.getsize(path)
        if x == 7 and runs == 1:
            raise ValueError("call 7 failed on its first attempt")
        return x, runs

    token = os.urandom(4).hex()
    results = cluster(retries=1)(fails_once).map(range(50), [token] * 50)
    assert [tuple(r) for r in results] == [(x, 2 if x == 7 else 1) for x in range(50)]
    with pytest.raises(ValueError, match="call 7 failed on its first attempt"):
        cluster(retries=0)(fails_once).map(range(50), [os.urandom(4).hex()] * 50)
