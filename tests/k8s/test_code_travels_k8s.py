"""The user's own code travels with the call to Kubernetes pods, inside the job's payload Secrets.

The testbed's kubelet runs pods as local processes with a clean environment and their own
working folder, so a module that exists only in the user's project folder is not
importable in the pod unless clustrix ships it.
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
from clustrix.errors import JobError
from clustrix.localcode import LocalCodeError
from tests.localcode_projects import (
    MAIN_JOBS,
    build_extension,
    editable_install,
    labels,
    run_main,
    set_factor,
    write_project,
)
from tests.testbed.k8s import KubeCluster

pytestmark = pytest.mark.testbed_k8s


def _secrets_of(kube: KubeCluster, job_id: str, namespace: str = "default") -> list[Any]:
    from kubernetes import client

    core = client.CoreV1Api(kube.api())
    selector = f"clustrix.io/job-id={job_id},clustrix.io/kind=payload"
    return sorted(core.list_namespaced_secret(namespace, label_selector=selector).items, key=lambda s: s.metadata.name)


def test_a_two_file_project_runs_in_pods_and_a_changed_module_is_picked_up(
    k8s_config: dict[str, Any], tmp_path: Path
) -> None:
    folder = write_project(tmp_path / "project")
    result, first = run_main(folder, k8s_config)
    assert result["run"] == 41
    assert result["map"] == [1, 11, 21]
    assert result["decorated_after_import"] == 40  # cluster(mylib.helper) applied after the import
    assert result["greet"].startswith("hello from mypkg ")  # relative import + importlib.resources data file
    assert result["moved"] == [True, 4]  # a local class as argument and result
    assert len(first) == MAIN_JOBS  # one archive per job: the map's three calls share one
    assert {label.split("-")[0] for label in labels(first, "sent")} >= {"mylib", "mypkg"}

    set_factor(folder, 100)
    result, changed = run_main(folder, k8s_config)
    assert result["run"] == 401  # the next call runs the edited mylib.py
    new_mylib = {label for label in labels(changed, "sent") if label.startswith("mylib-")}
    assert len(new_mylib) == 1 and not new_mylib & labels(first, "sent")


def test_a_map_carries_the_code_once_in_the_payload_secrets_its_jobs_share(
    k8s_config: dict[str, Any], kube: KubeCluster, local_modules: Path
) -> None:
    name = f"maplib_{uuid.uuid4().hex[:8]}"
    (local_modules / f"{name}.py").write_text("def triple(x):\n    return 3 * x\n")
    module = importlib.import_module(name)
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
    # the pods run the test interpreter: it has sortedcontainers (the dependency) but not myproj
    assert importlib.util.find_spec("myproj") is None
    result, events = run_main(driver, k8s_config, python=str(python))
    assert result["sorted"] == [[1, 2, 3], "1.2.3"]  # importlib.metadata reads the shipped .dist-info
    assert any(label.startswith("myproj-") for label in labels(events, "sent"))


def test_a_shipped_module_that_does_not_import_in_the_pod_fails_naming_it_and_the_fix(
    k8s_config: dict[str, Any], local_modules: Path
) -> None:
    name = f"podonly_{uuid.uuid4().hex[:8]}"
    (local_modules / f"{name}.py").write_text(
        "import os\n\nif os.environ.get('CLUSTRIX_POD_NAME'):\n"
        "    raise ImportError('this module needs a library the image lacks')\n\n\ndef one():\n    return 1\n"
    )
    module = importlib.import_module(name)
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


def test_a_compiled_extension_is_refused_before_anything_is_created(
    k8s_config: dict[str, Any], kube: KubeCluster, local_modules: Path, empty_namespace: str
) -> None:
    name = f"fastmod_{uuid.uuid4().hex[:8]}"
    build_extension(local_modules, name)
    fast = importlib.import_module(name)

    def uses_extension() -> str:
        return fast.__name__

    before = _objects(kube, empty_namespace)
    configure(**k8s_config, namespace=empty_namespace)
    with pytest.raises(LocalCodeError, match=rf"module '{name}' is local code with a compiled extension"):
        cluster(uses_extension)()
    assert _objects(kube, empty_namespace) == before


def test_a_module_over_max_module_size_is_refused_before_anything_is_created(
    k8s_config: dict[str, Any], kube: KubeCluster, local_modules: Path, empty_namespace: str
) -> None:
    name = f"bigpkg_{uuid.uuid4().hex[:8]}"
    (local_modules / name).mkdir()
    (local_modules / name / "__init__.py").write_text("VALUE = 1\n")
    (local_modules / name / "table.bin").write_bytes(b"\0" * 1_500_000)
    big = importlib.import_module(name)

    def uses_big() -> int:
        return big.VALUE

    before = _objects(kube, empty_namespace)
    configure(**k8s_config, namespace=empty_namespace, max_module_size="1MB")
    with pytest.raises(LocalCodeError, match=rf"local module '{name}' .* is 1\.5 MB, over max_module_size=1\.0 MB"):
        cluster(uses_big)()
    assert _objects(kube, empty_namespace) == before


def test_code_too_large_for_the_payload_secrets_is_refused_naming_the_module(
    k8s_config: dict[str, Any], kube: KubeCluster, local_modules: Path, empty_namespace: str
) -> None:
    name = f"hugepkg_{uuid.uuid4().hex[:8]}"
    (local_modules / name).mkdir()
    (local_modules / name / "__init__.py").write_text("VALUE = 2\n")
    (local_modules / name / "noise.bin").write_bytes(os.urandom(46 * 2**20))  # does not compress
    huge = importlib.import_module(name)

    def uses_huge() -> int:
        return huge.VALUE

    before = _objects(kube, empty_namespace)
    configure(**k8s_config, namespace=empty_namespace, max_module_size="100MB")
    with pytest.raises(ValueError, match=rf"local code \({name} 48\.2 MB; .* more than the 44 MiB") as caught:
        cluster(uses_huge)()
    assert f"exclude_modules=['{name}']" in str(caught.value)
    assert _objects(kube, empty_namespace) == before
