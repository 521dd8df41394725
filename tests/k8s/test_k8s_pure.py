"""Pure parts of clustrix-k8s: options, manifests, the results channel, state mapping (no cluster needed)."""

from __future__ import annotations

import base64
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustrix.config.resources import Resources
from clustrix.config.settings import ClusterConfig
from clustrix.plugin.types import JobState
from clustrix.remote.localcode.detection import locate
from clustrix.remote.localcode.plan import CodePlan
from clustrix.remote.localcode.units import CodeUnit, archive, make_unit
from clustrix_k8s import bootstrap, manifests, states
from clustrix_k8s.api import permission_message
from clustrix_k8s.options import CONFIG_KEYS, job_options

ENV = {"python": "3.11", "distributions": [], "hash": "x"}


def _config(**values: Any) -> ClusterConfig:
    return ClusterConfig({**CONFIG_KEYS, "cluster_type": "kubernetes", **values})


def test_resources_become_requests_limits_gpus_and_the_deadline() -> None:
    options = job_options(
        _config(cpu_limit="2500m", memory_limit="1Gi", backoff_limit=3, ttl_seconds_after_finished=60),
        Resources.parse(cores=2, memory="512MB", time="00:10:00", gpus=1),
        ENV,
    )
    job = manifests.job_manifest("20260101-000000-abc", "clustrix-x", options, 1, n_tasks=1, task=0, indexed=False)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "512000000"},
        "limits": {"cpu": "2500m", "memory": str(2**30), "nvidia.com/gpu": "1"},
    }
    assert job["spec"]["activeDeadlineSeconds"] == 600
    assert job["spec"]["template"]["spec"]["activeDeadlineSeconds"] == 600  # the kubelet enforces it on time
    assert job["spec"]["backoffLimit"] == 3
    assert job["spec"]["ttlSecondsAfterFinished"] == 60
    assert container["image"] == "python:3.11-slim"


def test_scheduling_options_reach_the_pod_template() -> None:
    options = job_options(
        _config(
            namespace="science",
            service_account="trainer",
            node_selector={"disktype": "ssd"},
            tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            labels={"team": "physics"},
            annotations={"note": "x y"},
            image="registry.example/me/py:1",
            image_pull_secrets=["regcred"],
            image_pull_policy="Always",
        ),
        Resources(),
        ENV,
    )
    job = manifests.job_manifest("id-1", "clustrix-id-1", options, 2, n_tasks=4, task=None, indexed=True)
    spec = job["spec"]["template"]["spec"]
    assert job["metadata"]["namespace"] == "science"
    assert spec["serviceAccountName"] == "trainer"
    assert spec["nodeSelector"] == {"disktype": "ssd"}
    assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["containers"][0]["imagePullPolicy"] == "Always"
    assert job["metadata"]["labels"]["team"] == "physics"
    assert job["spec"]["template"]["metadata"]["annotations"] == {"note": "x y"}
    assert (job["spec"]["completionMode"], job["spec"]["completions"]) == ("Indexed", 4)
    assert [v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v] == [
        "clustrix-id-1-payload-0",
        "clustrix-id-1-payload-1",
    ]
    # a user image is taken as prepared: no pip install at container start
    assert "pip install" not in spec["containers"][0]["command"][2]


def test_the_default_image_replicates_the_environment_with_pip_at_container_start() -> None:
    env = {**ENV, "distributions": [{"name": "numpy", "version": "2.0.0", "source": "pypi"}]}
    options = job_options(_config(), Resources(), env)
    command = manifests.container_command(options)[2]
    assert "python -m pip install" in command and "--target" in command
    assert options.pip_requirements == ("numpy==2.0.0", "cloudpickle")


@pytest.mark.parametrize(
    ("values", "resources", "match"),
    [
        ({"cpu_limit": "lots"}, {}, "cpu_limit='lots'"),
        ({"memory_limit": "2XB"}, {}, "memory_limit='2XB'"),
        ({"backoff_limit": -1}, {}, "backoff_limit=-1"),
        ({"namespace": "Not_A_Label"}, {}, "namespace='Not_A_Label'"),
        ({"labels": {"team": "has space"}}, {}, "valid label value"),
        ({"image_pull_policy": "Sometimes"}, {}, "image_pull_policy='Sometimes'"),
        ({"module_loads": ["gcc"]}, {}, "module_loads"),
        ({}, {"partition": "gpu"}, "partition='gpu' has no meaning on Kubernetes"),
        ({}, {"qos": "high"}, "option\\(s\\) qos"),
        ({"pending_timeout": 0}, {}, "pending_timeout=0"),
        ({"cpu_limit": "500m"}, {"cores": 2}, "cores=2 asks for more than cpu_limit='500m'"),
        ({"memory_limit": "1GB"}, {"memory": "2GB"}, "more than memory_limit='1GB'"),
        ({"volume_mounts": [{"name": "x", "mountPath": "/x"}]}, {}, "volume_mounts"),
    ],
)
def test_bad_options_are_refused_naming_the_key(values: dict[str, Any], resources: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        job_options(_config(**values), Resources.parse(**resources), ENV)


def test_a_payload_too_large_for_its_secrets_is_refused_before_anything_is_created() -> None:
    options = job_options(_config(), Resources(), ENV)
    big = b"x" * (manifests.MAX_CHUNKS * manifests.CHUNK_BYTES + 1)
    with pytest.raises(manifests.PayloadTooLargeError, match="pass large data by reference"):
        manifests.payload_secrets("id", options, big, key=b"k", bootstrap_source="", runner_source="")


def test_code_over_the_payload_secrets_is_refused_naming_the_largest_unit() -> None:
    options = job_options(_config(), Resources(), ENV)
    units = tuple(
        CodeUnit(name=name, digest="0" * 16, size=size, source=f"/p/{name}", distribution=None, files=())
        for name, size in (("small", 2000), ("data_pkg", 50 * 2**20))
    )
    code = b"x" * (manifests.MAX_CHUNKS * manifests.CHUNK_BYTES)
    with pytest.raises(manifests.PayloadTooLargeError) as caught:
        manifests.payload_secrets(
            "id", options, b"calls", key=b"k", bootstrap_source="", runner_source="", code=code,
            plan=CodePlan(units=units, modules=("small",)),
        )  # fmt: skip
    message = str(caught.value)
    assert "local code (data_pkg 52.4 MB, small 2.0 kB; 43.8 MiB compressed)" in message
    assert "exclude_modules=['data_pkg']" in message and "nothing was created" in message


def test_the_code_leads_the_payload_and_the_pod_puts_it_first_on_sys_path(
    tmp_path: Path, local_modules: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"podside_{uuid.uuid4().hex[:8]}"
    (local_modules / f"{name}.py").write_text("VALUE = 7\n")
    origin = locate(name)
    assert origin is not None
    plan = CodePlan(units=(make_unit(origin, limit=10**6),), modules=(name,))
    code = archive(plan.units)
    options = job_options(_config(), Resources(), ENV)
    secrets = manifests.payload_secrets(
        "id", options, b"the calls", key=b"k", bootstrap_source="", runner_source="", code=code, plan=plan
    )
    meta = json.loads(base64.b64decode(secrets[0]["data"]["meta.json"]))
    assert meta["code"] == {"size": len(code), "units": [plan.units[0].label], "modules": [name]}
    stream = b"".join(base64.b64decode(s["data"]["payload"]) for s in secrets)
    assert stream[len(code) :] == b"the calls"
    # the pod side, in a process that does not see the user's folder
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(local_modules)])
    monkeypatch.setenv("PYTHONPATH", "/image/lib")
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (unit_dir,) = bootstrap.install_code(stream[: meta["code"]["size"]], meta["code"], str(job_dir))
    assert sys.path[0] == unit_dir and os.environ["PYTHONPATH"] == f"{unit_dir}:/image/lib"
    assert bootstrap.import_code([name]) is None
    assert sys.modules.pop(name).__file__ == os.path.join(unit_dir, f"{name}.py")
    failure = bootstrap.import_code([f"{name}_missing"])
    assert failure is not None and f"your local module '{name}_missing' was shipped" in failure


def _as_listing(secrets: list[dict[str, bytes]], *, task: int, attempt: str, stamp: int) -> list[dict[str, Any]]:
    return [
        {
            "metadata": {
                "labels": {"clustrix.io/task": str(task)},
                "annotations": {
                    "clustrix.io/attempt": attempt,
                    "clustrix.io/stamp": str(stamp),
                    "clustrix.io/objects": str(len(secrets)),
                },
            },
            "binaryData": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }
        for data in secrets
    ]


def _sent(
    outcomes: dict[int, bytes], key: bytes, *, task: int = 0, attempt: str = "a", stamp: int = 1
) -> list[dict[str, Any]]:
    """The result objects one attempt sends, as a list of them reads back."""
    context = bootstrap.attempt_context(task, attempt, str(stamp))
    return _as_listing(bootstrap.pack_outcomes(outcomes, key, context), task=task, attempt=attempt, stamp=stamp)


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(st.integers(0, 20), st.binary(max_size=3 * bootstrap.PART_BYTES // 2), max_size=4))
def test_outcomes_packed_into_secrets_come_back_byte_for_byte(outcomes: dict[int, bytes]) -> None:
    packed = bootstrap.pack_outcomes(outcomes, b"key", bootstrap.attempt_context(0, "a", "1"))
    assert all(sum(len(v) for v in data.values()) <= bootstrap.SECRET_BYTES for data in packed)
    assert bootstrap.outcome_bytes(_as_listing(packed, task=0, attempt="a", stamp=1), b"key") == outcomes


def test_the_newest_complete_attempt_wins_and_incomplete_or_forged_ones_are_ignored() -> None:
    first = _sent({0: b"failed"}, b"key", attempt="pod-a", stamp=1)
    second = _sent({0: b"succeeded"}, b"key", attempt="pod-b", stamp=2)
    assert bootstrap.outcome_bytes(first + second, b"key") == {0: b"succeeded"}
    partial = _sent({0: b"y" * (3 * bootstrap.SECRET_BYTES)}, b"key", attempt="pod-c", stamp=3)[:-1]
    assert bootstrap.outcome_bytes(first + second + partial, b"key") == {0: b"succeeded"}
    forged = _sent({0: b"forged"}, b"other key", attempt="pod-d", stamp=4)
    assert bootstrap.outcome_bytes(forged, b"key") == {}


def test_result_objects_hold_no_outcome_in_the_clear() -> None:
    outcome = b"the value of a call, which a view role must not read" * 3
    sent = _sent({0: outcome}, b"key")
    assert all(outcome[:20] not in base64.b64decode(v) for item in sent for v in item["binaryData"].values())
    assert bootstrap.outcome_bytes(sent, b"key") == {0: outcome}


def test_a_newer_unsigned_or_wrongly_signed_attempt_does_not_hide_the_signed_one() -> None:
    real = _sent({0: b"real", 1: b"also"}, b"key", attempt="pod-a", stamp=1)
    unsigned = _as_listing([{"0.0.1": b"forged"}], task=0, attempt="pod-x", stamp=2)
    wrong_key = _sent({0: b"forged"}, b"other", attempt="pod-y", stamp=3)
    half = bootstrap.pack_outcomes({0: b"real", 1: b"also"}, b"key", bootstrap.attempt_context(0, "pod-z", "4"))
    half_signed = _as_listing([half[0] | {"1.mac": b"0" * 64}], task=0, attempt="pod-z", stamp=4)
    listing = unsigned + wrong_key + half_signed + real
    refused: list[str] = []
    assert bootstrap.outcome_bytes(listing, b"key", refused) == {0: b"real", 1: b"also"}
    assert sorted(refused) == ["pod-x", "pod-y", "pod-z"]


def test_an_old_attempt_replayed_under_a_newer_stamp_or_another_task_is_refused() -> None:
    failed = _sent({0: b"first attempt failed"}, b"key", attempt="pod-a", stamp=1)
    succeeded = _sent({0: b"second attempt succeeded"}, b"key", attempt="pod-b", stamp=2)
    replayed = _as_listing(
        [{k: base64.b64decode(v) for k, v in item["binaryData"].items()} for item in failed],
        task=0,
        attempt="pod-a",
        stamp=3,
    )
    assert bootstrap.outcome_bytes(failed + succeeded + replayed, b"key") == {0: b"second attempt succeeded"}
    moved = [{**item, "metadata": {**item["metadata"], "labels": {"clustrix.io/task": "1"}}} for item in succeeded]
    assert bootstrap.outcome_bytes(moved, b"key") == {}


def _job(conditions: list[dict[str, str]] | None = None, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "j", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"conditions": conditions or [], **status},
    }


def _pod(phase: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"phase": phase, **status},
    }


T0 = states.parse_time("2026-01-01T00:00:00Z") or 0.0


@pytest.mark.parametrize(
    ("jobs", "pods", "state"),
    [
        ([_job([{"type": "Complete", "status": "True"}])], None, JobState.COMPLETED),
        ([_job([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}])], None, JobState.TIMEOUT),
        (  # the kubelet ended the pod at the pod's deadline: the Job says only BackoffLimitExceeded
            [_job([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])],
            [_pod("Failed", reason="DeadlineExceeded")],
            JobState.TIMEOUT,
        ),
        (
            [_job([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])],
            [_pod("Failed", containerStatuses=[{"state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}])],
            JobState.OUT_OF_MEMORY,
        ),
        (
            [_job([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])],
            [_pod("Failed", containerStatuses=[{"state": {"terminated": {"exitCode": 1, "reason": "Error"}}}])],
            JobState.FAILED,
        ),
        ([], None, JobState.CANCELLED),
        ([_job(active=1)], None, JobState.RUNNING),
        ([_job()], None, JobState.PENDING),
        (
            [_job(active=1)],
            [
                _pod(
                    "Pending",
                    containerStatuses=[{"state": {"waiting": {"reason": "ImagePullBackOff", "message": "m"}}}],
                )
            ],
            JobState.FAILED,
        ),
        (
            [_job(active=1)],
            [_pod("Pending", conditions=[{"type": "PodScheduled", "status": "False", "message": "0/1 nodes"}])],
            JobState.FAILED,
        ),
    ],
)
def test_kubernetes_states_map_to_clustrix_states(jobs: list[Any], pods: list[Any] | None, state: JobState) -> None:
    status = states.job_status(jobs, 1, pods, now=T0 + 200, pending_timeout=120)
    assert status is not None and status.state is state


def test_a_job_under_deletion_whose_killed_pod_failed_it_is_cancelled_not_failed() -> None:
    # cancel deletes the Job in the foreground; the kubelet kills the pod after its grace period and
    # the job controller marks the Job failed before it disappears (seen on the real-node testbed)
    job = _job([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])
    job["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    killed = [_pod("Failed", containerStatuses=[{"state": {"terminated": {"exitCode": 137, "reason": "Error"}}}])]
    status = states.job_status([job], 1, killed, now=T0 + 200, pending_timeout=120)
    assert status is not None and status.state is JobState.CANCELLED


def test_a_failed_pip_step_names_image_and_the_index_as_the_fix_and_pip_fails_fast() -> None:
    failed = _job([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])
    exited = [_pod("Failed", containerStatuses=[{"state": {"terminated": {"exitCode": states.PIP_FAILED_EXIT}}}])]
    status = states.job_status([failed], 1, exited, now=T0 + 5, pending_timeout=120, pip_step=True)
    assert status is not None and status.state is JobState.FAILED
    assert "pip step" in (status.reason or "") and "image=" in (status.reason or "")
    assert "PIP_INDEX_URL" in (status.reason or "")
    # the same exit code from a pod without the pip step is the user's own
    status = states.job_status([failed], 1, exited, now=T0 + 5, pending_timeout=120)
    assert status is not None and "image=" not in (status.reason or "")
    command = manifests.container_command(job_options(_config(), Resources(), ENV))[2]
    assert "--retries 1 --timeout 10" in command and f"exit {states.PIP_FAILED_EXIT}" in command


def test_a_stuck_pod_within_its_grace_is_still_pending_or_running() -> None:
    pods = [_pod("Pending", containerStatuses=[{"state": {"waiting": {"reason": "ErrImagePull"}}}])]
    status = states.job_status([_job(active=1)], 1, pods, now=T0 + 5, pending_timeout=120)
    assert status is not None and not status.state.final


def test_a_round_needs_the_pods_only_for_failed_or_long_pending_jobs() -> None:
    failed = _job([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])
    assert states.needs_pods([failed], now=T0, pending_timeout=120, started=False)
    assert not states.needs_pods([_job(active=1)], now=T0 + 5, pending_timeout=120, started=False)
    assert states.needs_pods([_job(active=1)], now=T0 + 200, pending_timeout=120, started=False)
    assert not states.needs_pods([_job(active=1)], now=T0 + 200, pending_timeout=120, started=True)


def test_an_api_server_error_carries_its_status_and_message() -> None:
    """HTTP 500 and 410 from a server (faults the testbed cannot produce on demand) become KubernetesAPIError."""
    import http.server
    import threading

    from clustrix_k8s.api import KubeApi, KubernetesAPIError

    class Failing(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            code = 410 if "secrets" in self.path else 500
            body = json.dumps({"kind": "Status", "message": f"injected {code}", "reason": "Expired"}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
        api = KubeApi(client.ApiClient(configuration), configuration.host)
        with pytest.raises(
            KubernetesAPIError, match=r"could not list jobs in namespace 'ns' \(500\): injected 500"
        ) as info:
            api.request("GET", "list", "jobs", "ns")
        assert info.value.status == 500
        with pytest.raises(KubernetesAPIError, match="injected 410") as gone:
            api.request("GET", "list", "secrets", "ns")
        assert (gone.value.status, gone.value.reason) == (410, "Expired")
        assert api.total_calls() == 2
    finally:
        server.shutdown()


def test_a_403_names_the_verb_the_resource_and_its_api_group() -> None:
    body = json.dumps({"message": 'jobs.batch is forbidden: User "bob" cannot create resource "jobs"'})
    text = permission_message(403, "create", "jobs", "science", body)
    assert 'needs the verb "create" on resource "jobs" (apiGroups: ["batch"])' in text
    assert "namespace 'science'" in text and 'User "bob"' in text
    assert "401 Unauthorized" in permission_message(401, "list", "jobs", "science", "{}")


def test_kubernetes_keywords_are_accepted_at_decoration_and_a_typo_is_refused_with_a_suggestion() -> None:
    from clustrix import cluster

    @cluster(cluster_type="kubernetes", calls_per_task=5, cpu_limit="2", node_selector={"disk": "ssd"})
    def f() -> None: ...

    # cpu_limit and node_selector are configuration keys: moved to the configuration at the first submission
    assert f.resources.extra == {"calls_per_task": 5, "cpu_limit": "2", "node_selector": {"disk": "ssd"}}
    with pytest.raises(ValueError, match=r"unknown keyword cpu_limt='2'.*did you mean 'cpu_limit'\?"):
        cluster(cluster_type="kubernetes", cpu_limt="2")


# ---- futures as arguments: what a dependant's pods wait for (clustrix_k8s.inputs, bootstrap.needed_inputs) ----
def _upstream(job_id: str, *, deadline: int | None, namespace: str = "ns", host: str = "https://api") -> Any:
    from clustrix.plugin.types import JobHandle

    data = {"namespace": namespace, "key": "ab" * 32, "deadline": deadline}
    return JobHandle(job_id=job_id, scheduler="kubernetes", host=host, native_id=f"cx-{job_id}", data=data)


def test_each_task_of_a_dependant_waits_only_for_the_upstream_calls_its_own_calls_take() -> None:
    from clustrix.plugin.types import Dependency
    from clustrix_k8s import inputs

    up = _upstream("up", deadline=60)
    element_wise = Dependency(
        job_id="up", native_id="cx-up", job_dir="/in/up", size=4, calls=tuple((i, i) for i in range(4)), handle=up
    )
    whole = Dependency(job_id="w", native_id="cx-w", job_dir="/in/w", size=2, calls=((3, 0), (3, 1)), handle=up)
    meta = {"after": inputs.after([element_wise, whole], [[0, 1], [2, 3]])}
    assert meta["after"][0] == {"job": "up", "dir": "/in/up", "key": "ab" * 32, "needs": [[0, 1], [2, 3]]}
    assert meta["after"][1]["needs"] == [[], [0, 1]]
    json.dumps(meta)  # it travels in meta.json
    assert [(e["job"], calls) for e, calls in bootstrap.needed_inputs(meta, 0)] == [("up", {0, 1})]
    assert [(e["job"], calls) for e, calls in bootstrap.needed_inputs(meta, 1)] == [("up", {2, 3}), ("w", {0, 1})]


def test_a_dependants_deadline_is_its_own_plus_its_slowest_inputs_and_none_if_an_input_has_none() -> None:
    from clustrix.plugin.types import Dependency
    from clustrix_k8s import inputs

    def on(*deadlines: int | None) -> list[Dependency]:
        return [
            Dependency(job_id=f"j{n}", native_id="x", job_dir="/d", handle=_upstream(f"j{n}", deadline=d))
            for n, d in enumerate(deadlines)
        ]

    assert inputs.deadline(30, on(60, 600)) == 630
    assert inputs.deadline(30, on(60, None)) is None
    assert inputs.deadline(None, on(60)) is None
    assert inputs.deadline(30, []) == 30


def test_pods_read_inputs_only_in_their_own_namespace_on_their_own_server() -> None:
    from clustrix_k8s import inputs

    up = _upstream("up", deadline=None)
    assert inputs.input_dir(up, "https://api", "ns") == f"{bootstrap.INPUTS}/up"
    assert inputs.input_dir(up, "https://api", "other") is None
    assert inputs.input_dir(up, "https://elsewhere", "ns") is None


def test_an_upstream_is_over_when_its_jobs_are_gone_or_each_has_ended() -> None:
    def job(*conditions: tuple[str, str]) -> dict[str, Any]:
        return {"status": {"conditions": [{"type": t, "status": s} for t, s in conditions]}}

    assert bootstrap.upstream_over([])  # deleted (cancelled) or never there
    assert bootstrap.upstream_over([job(("Complete", "True")), job(("Failed", "True"))])
    assert not bootstrap.upstream_over([job(("Complete", "True")), job()])
    assert not bootstrap.upstream_over([job(("Failed", "False"))])


def test_the_runner_role_lets_pods_read_inputs_but_no_secret() -> None:
    (_, _account), (_, role), _binding = manifests.runner_identity("ns", "clustrix-runner")
    verbs = {
        (rule["apiGroups"][0], resource): set(rule["verbs"]) for rule in role["rules"] for resource in rule["resources"]
    }
    assert verbs == {("", "configmaps"): {"create", "list"}, ("batch", "jobs"): {"list"}}
