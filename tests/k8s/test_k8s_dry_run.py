"""``fn.job_script`` on Kubernetes: the Job manifests a submit creates, Secret contents and tokens never shown."""

from __future__ import annotations

import json
from pathlib import Path

from clustrix import cluster, registry

TOKEN = "dry-run-token-that-must-not-print"


def kubeconfig(tmp_path: Path) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://k8s.example.invalid:6443"}}],
                "users": [{"name": "u", "user": {"token": TOKEN}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "team"}}],
                "current-context": "x",
            }
        )
    )
    return str(path)


def add(a, b):
    return a + b


def test_a_map_dry_run_shows_one_indexed_job_and_redacted_payload_secrets_without_asking_the_server(
    tmp_path: Path,
) -> None:
    fn = cluster(cluster_type="kubernetes", kubeconfig=kubeconfig(tmp_path), image="python:3.11-slim", cores=1)(add)
    shown = fn.job_script.map([1, 2, 3], [10, 20, 30])
    text = str(shown)
    manifests = json.loads(str(shown.script))
    assert manifests["kind"] == "List"
    kinds = [item["kind"] for item in manifests["items"]]
    assert kinds[-1] == "Job" and kinds.count("Job") == 1 and set(kinds) == {"Secret", "Job"}
    job = manifests["items"][-1]
    assert job["metadata"]["namespace"] == "team" and job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "python:3.11-slim"
    for secret in manifests["items"][:-1]:
        assert all(value.endswith("bytes, not shown>") for value in secret["data"].values())
    assert TOKEN not in text
    assert shown.commands[0].startswith("POST https://k8s.example.invalid:6443/apis/batch/v1/namespaces/team/jobs")
    assert shown.commands[-1].startswith("POST https://k8s.example.invalid:6443/api/v1/namespaces/team/secrets")
    assert any("Indexed Job assumed" in note for note in shown.notes)
    assert (shown.calls, shown.tasks) == (3, 3)
    assert registry.list_jobs() == []


def test_a_dry_run_names_environment_variables_but_shows_no_value(tmp_path: Path) -> None:
    value = "hunter2-dry-run-value"
    fn = cluster(
        cluster_type="kubernetes",
        kubeconfig=kubeconfig(tmp_path),
        image="python:3.11-slim",
        environment_variables={"API_TOKEN": value},
    )(add)
    shown = fn.job_script(1, 2)
    assert value not in str(shown) and value not in str(shown.script)
    job = json.loads(str(shown.script))["items"][-1]
    (variable,) = [e for e in job["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "API_TOKEN"]
    assert variable["valueFrom"]["secretKeyRef"] == {"name": job["metadata"]["name"] + "-payload-0", "key": "env.0"}


def test_a_dry_run_needs_no_kubeconfig_and_renders_for_the_configured_or_default_namespace(
    tmp_path: Path, monkeypatch
) -> None:
    from clustrix_k8s import api

    api.forget_clients()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.kube
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nowhere" / "config"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for namespace, expected in ((None, "default"), ("science", "science")):
        options = {"namespace": namespace} if namespace else {}
        fn = cluster(cluster_type="kubernetes", image="python:3.11-slim", **options)(add)
        shown = fn.job_script(1, 2)
        job = json.loads(str(shown.script))["items"][-1]
        assert job["kind"] == "Job" and job["metadata"]["namespace"] == expected
        assert shown.commands[0].startswith(f"POST https://<api-server>/apis/batch/v1/namespaces/{expected}/jobs")
        assert any("no Kubernetes configuration was loaded" in note for note in shown.notes), shown.notes
    assert registry.list_jobs() == []
