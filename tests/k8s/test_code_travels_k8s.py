"""The user's own code travels with the call to Kubernetes pods, inside the job's payload Secrets.

The testbed's pods run in containers of an image that holds Debian's Python and the
distributions the calls need, never the user's project folder, so a module that exists
only there is not importable in the pod unless clustrix ships it.
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import os
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from clustrix import cluster, configure
from clustrix.errors import JobError, LocalCodeError
from tests.k8s.conftest import with_clustrix_in_pods
from tests.localcode_projects import (
    data_package,
    editable_install,
    extension_module,
    labels,
    local_module,
    run_and_change,
    run_main,
    write_project,
)
from tests.testbed.k8s import KubeCluster

pytestmark = pytest.mark.testbed_k8s


@pytest.fixture
def k8s_config(k8s_config: dict[str, Any]) -> dict[str, Any]:
    """The projects' modules import clustrix (``@cluster``), so unpickling in the pod needs it there."""
    return with_clustrix_in_pods(k8s_config)


def _secrets_of(kube: KubeCluster, job_id: str, namespace: str = "default") -> list[Any]:
    from kubernetes import client

    core = client.CoreV1Api(kube.api())
    selector = f"clustrix.io/job-id={job_id},clustrix.io/kind=payload"
    return sorted(core.list_namespaced_secret(namespace, label_selector=selector).items, key=lambda s: s.metadata.name)


def test_a_two_file_project_runs_in_pods_and_a_changed_module_is_picked_up(
    k8s_config: dict[str, Any], tmp_path: Path
) -> None:
    first, changed = run_and_change(write_project(tmp_path / "project"), k8s_config)
    # no cache in the cluster: every job carries all its units, the edited module under its new hash
    assert {label.split("-")[0] for label in labels(changed, "sent")} >= {"mylib", "mypkg"}
    new_mylib = {label for label in labels(changed, "sent") if label.startswith("mylib-")}
    assert len(new_mylib) == 1 and not new_mylib & labels(first, "sent")


def test_a_map_carries_the_code_once_in_the_payload_secrets_its_jobs_share(
    k8s_config: dict[str, Any], kube: KubeCluster, local_modules: Path
) -> None:
    name, module = local_module(local_modules, "maplib", "def triple(x):\n    return 3 * x\n")
    configure(**k8s_config)
    futures = cluster(module.triple).submit_map(range(3))
    assert [f.result(timeout=180) for f in futures] == [0, 3, 6]
    (job_id,) = {f.job_id for f in futures}
    secrets = _secrets_of(kube, job_id)
    meta = json.loads(base64.b64decode(secrets[0].data["meta.json"]))
    assert meta["code"]["units"] == [f"{name}-{meta['code']['units'][0].split('-')[1]}"]
    assert meta["code"]["modules"] == [name]
    stream = b"".join(base64.b64decode(s.data["payload"]) for s in secrets)
    with tarfile.open(fileobj=io.BytesIO(stream[: meta["code"]["size"]]), mode="r:gz") as tar:
        assert tar.getnames() == [f"{meta['code']['units'][0]}/{name}.py"]
    # every pod of the map mounted the same Secrets: the archive exists once for the whole job
    from kubernetes import client

    jobs = client.BatchV1Api(kube.api()).list_namespaced_job("default", label_selector=f"clustrix.io/job-id={job_id}")
    mounted = {
        volume.secret.secret_name
        for job in jobs.items
        for volume in job.spec.template.spec.volumes
        if volume.secret is not None
    }
    assert mounted == {s.metadata.name for s in secrets}


def test_an_editable_install_travels_as_source_and_its_dependency_comes_from_the_image(
    k8s_config: dict[str, Any], tmp_path: Path
) -> None:
    python, driver = editable_install(tmp_path)
    # the pods' image has sortedcontainers (the dependency) but not myproj
    assert importlib.util.find_spec("myproj") is None
    result, events = run_main(driver, k8s_config, python=str(python))
    assert result["sorted"] == [[1, 2, 3], "1.2.3"]  # importlib.metadata reads the shipped .dist-info
    assert any(label.startswith("myproj-") for label in labels(events, "sent"))


def test_a_shipped_module_that_does_not_import_in_the_pod_fails_naming_it_and_the_fix(
    k8s_config: dict[str, Any], local_modules: Path
) -> None:
    source = (
        "import os\n\nif os.environ.get('CLUSTRIX_POD_NAME'):\n"
        "    raise ImportError('this module needs a library the image lacks')\n\n\ndef one():\n    return 1\n"
    )
    name, module = local_module(local_modules, "podonly", source)
    configure(**k8s_config)
    with pytest.raises(JobError) as caught:
        cluster(module.one)()
    text = str(caught.value) + (caught.value.stderr_tail or "")
    assert f"your local module {name!r} was shipped with the job but does not import" in text
    assert "this module needs a library the image lacks" in text
    assert f"exclude_modules=[{name!r}]" in text


# -- refusals: before anything exists in the API -----------------------------------------------


@pytest.fixture
def empty_namespace(kube: KubeCluster) -> str:
    from kubernetes import client

    name = f"refusals-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(kube.api()).create_namespace({"metadata": {"name": name}})
    kube.wait_service_account(name)  # the controller's own objects exist before the "before" listing
    return name


def _objects(kube: KubeCluster, namespace: str) -> dict[str, list[str]]:
    from kubernetes import client

    core, batch = client.CoreV1Api(kube.api()), client.BatchV1Api(kube.api())
    return {
        "jobs": sorted(j.metadata.name for j in batch.list_namespaced_job(namespace).items),
        "secrets": sorted(
            s.metadata.name
            for s in core.list_namespaced_secret(namespace).items
            if s.type != "kubernetes.io/service-account-token"
        ),
        "serviceaccounts": sorted(a.metadata.name for a in core.list_namespaced_service_account(namespace).items),
    }


def _refused_before_anything_is_created(
    kube: KubeCluster, options: dict[str, Any], function: Any, error: type[Exception], match: str
) -> Exception:
    namespace = options["namespace"]
    before = _objects(kube, namespace)
    configure(**options)
    with pytest.raises(error, match=match) as caught:
        cluster(function)()
    assert _objects(kube, namespace) == before
    return caught.value


def test_a_compiled_extension_is_refused_before_anything_is_created(
    k8s_config: dict[str, Any], kube: KubeCluster, local_modules: Path, empty_namespace: str
) -> None:
    name, fast = extension_module(local_modules, "fastmod")

    def uses_extension() -> str:
        return fast.__name__

    options = {**k8s_config, "namespace": empty_namespace}
    refused = rf"module '{name}' is local code with a compiled extension"
    _refused_before_anything_is_created(kube, options, uses_extension, LocalCodeError, refused)


def test_a_module_over_max_module_size_is_refused_before_anything_is_created(
    k8s_config: dict[str, Any], kube: KubeCluster, local_modules: Path, empty_namespace: str
) -> None:
    name, big = data_package(local_modules, "bigpkg", b"\0" * 1_500_000)

    def uses_big() -> int:
        return big.VALUE

    options = {**k8s_config, "namespace": empty_namespace, "max_module_size": "1MB"}
    refused = rf"local module '{name}' .* is 1\.5 MB, over max_module_size=1\.0 MB"
    _refused_before_anything_is_created(kube, options, uses_big, LocalCodeError, refused)


def test_code_too_large_for_the_payload_secrets_is_refused_naming_the_module(
    k8s_config: dict[str, Any], kube: KubeCluster, local_modules: Path, empty_namespace: str
) -> None:
    name, huge = data_package(local_modules, "hugepkg", os.urandom(46 * 2**20))  # random: does not compress

    def uses_huge() -> int:
        return huge.VALUE

    options = {**k8s_config, "namespace": empty_namespace, "max_module_size": "100MB"}
    refused = rf"local code \({name} 48\.2 MB; .* more than the 44 MiB"
    error = _refused_before_anything_is_created(kube, options, uses_huge, ValueError, refused)
    assert f"exclude_modules=['{name}']" in str(error)
