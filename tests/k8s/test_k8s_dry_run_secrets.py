"""A Kubernetes dry run names the job's ``environment_variables`` and shows no value (item 7 of issue 18)."""

from __future__ import annotations

import json
from pathlib import Path

from clustrix import cluster
from tests.k8s.test_k8s_dry_run import add, kubeconfig

SECRET = "s3cr3t-t0ken"  # 12 bytes


def test_a_kubernetes_dry_run_shows_environment_variables_as_sizes(tmp_path: Path) -> None:
    fn = cluster(
        cluster_type="kubernetes",
        kubeconfig=kubeconfig(tmp_path),
        image="python:3.11-slim",
        environment_variables={"API_TOKEN": SECRET},
    )(add)
    shown = fn.job_script(1, 2)
    assert SECRET not in str(shown) and SECRET not in json.dumps(shown.to_dict())
    manifests = json.loads(str(shown.script))
    [job] = [item for item in manifests["items"] if item["kind"] == "Job"]
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "API_TOKEN" in env  # named; its value only as a size (or a reference to the job's Secret)
    assert "value" not in env["API_TOKEN"] and "secretKeyRef" in env["API_TOKEN"]["valueFrom"]
