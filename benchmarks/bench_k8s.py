"""Benchmark clustrix-k8s against raw Kubernetes Jobs on the real control plane of tests/testbed.

Run with ``nox -s bench`` (or ``python benchmarks/bench_k8s.py --output FILE`` as root in a
venv with clustrix-core and clustrix-k8s). It starts etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and a real kubelet over containerd (``tests/testbed/k8s.py``).

Cases (issue 12), every contender in one run, runs interleaved round-robin:

(a) ``single``: one trivial call's round trip (submit, run, result back) with clustrix,
    against one raw Job running ``python -c pass``, created through the API and watched to
    completion (a watch on the Job).
(b) ``map100``: ``map`` over 100 trivial calls with clustrix (packed into
    ``max_parallel_jobs`` pods, default 10), against 100 such raw Jobs created at once and
    watched until all complete.
(c) ``api_calls``: the API requests clustrix makes for one ``map`` of 100 calls, counted by
    verb and resource (the client counts every request it sends).
(d) ``code``: the cost of carrying the user's own code: one trivial call of a function from a
    local package of ``CODE_FILES`` modules (its archive travels in the payload Secrets, is
    unpacked and imported in the pod) against the same call of a function defined in
    ``__main__`` (pickled by value, no code shipped); plus the archive's size and the time
    to build it at submit.

Pods of both contenders run the testbed's prepared image (Debian's Python with
``cloudpickle``, pulled from the testbed's registry). Each timed run starts with no clustrix or raw Job active.
Figures are medians of ``--repeats`` runs (at least 3) with min and max. A benchmark
reports and never asserts.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.testbed brings the control plane up

from harness import rotated, summary  # noqa: E402 - benchmarks/harness.py, next to this file

MAP_SIZE = 100
NAMESPACE = "default"
#: Modules in the local package of the ``code`` case (as in bench_localcode.py).
CODE_FILES = 200


def trivial(x: int) -> int:
    return x + 1


class RawJobs:
    """Raw Jobs through the official client: ``python -c pass``, created at once, watched to completion."""

    name = "raw Jobs (python -c pass)"

    def __init__(self, api_client: Any, image: str) -> None:
        from kubernetes import client

        self.image = image

        self.batch = client.BatchV1Api(api_client)

    def _manifest(self, name: str, run: str) -> dict[str, Any]:
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "labels": {"bench-run": run}},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"labels": {"bench-run": run}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": self.image, "command": ["python3", "-c", "pass"]}],
                    },
                },
            },
        }

    def run(self, count: int) -> int:
        from kubernetes import watch

        run = uuid.uuid4().hex[:8]
        listing = self.batch.list_namespaced_job(NAMESPACE, label_selector=f"bench-run={run}")
        for index in range(count):
            self.batch.create_namespaced_job(NAMESPACE, self._manifest(f"bench-{run}-{index}", run))
        done: set[str] = set()
        stream = watch.Watch().stream(
            self.batch.list_namespaced_job,
            NAMESPACE,
            label_selector=f"bench-run={run}",
            resource_version=listing.metadata.resource_version,
            timeout_seconds=600,
        )
        for event in stream:
            job = event["object"]
            if any(c.type == "Complete" and c.status == "True" for c in job.status.conditions or []):
                done.add(job.metadata.name)
            if any(c.type == "Failed" and c.status == "True" for c in job.status.conditions or []):
                raise RuntimeError(f"raw Job {job.metadata.name} failed")
            if len(done) == count:
                break
        self.batch.delete_collection_namespaced_job(
            NAMESPACE, label_selector=f"bench-run={run}", propagation_policy="Background"
        )
        return len(done)

    def single(self) -> int:
        return self.run(1)

    def map(self) -> int:
        return self.run(MAP_SIZE)


class Clustrix:
    name = "clustrix"

    def __init__(self) -> None:
        from clustrix import cluster

        self.function = cluster(trivial)

    def single(self) -> int:
        return int(self.function(1))

    def map(self) -> list[int]:
        return list(self.function.map(range(MAP_SIZE)))


class ClustrixWithCode:
    """One trivial call of a function from a local package: its source travels with the job."""

    name = f"clustrix, {CODE_FILES}-module package"

    def __init__(self, folder: Path) -> None:
        from clustrix import cluster

        package = folder / "benchcode"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(
            f"# {time.time_ns()}\nfrom benchcode.m0 import VALUE\n\n\ndef trivial(x):\n    return x + VALUE\n"
        )
        for index in range(CODE_FILES):
            functions = "".join(f"\n\ndef f{n}_{index}(x):\n    return x * {n} + {index}\n" for n in range(40))
            (package / f"m{index}.py").write_text(f"VALUE = 1{functions}")  # ~2 kB of distinct source
        sys.path.insert(0, str(folder))
        self.module = importlib.import_module("benchcode")
        self.function = cluster(self.module.trivial)

    def single(self) -> int:
        return int(self.function(1))

    def archive(self) -> tuple[int, float]:
        """(bytes, seconds) of the archive a submit builds for this package."""
        from clustrix.remote.localcode.detection import dumps_recording
        from clustrix.remote.localcode.plan import plan_code
        from clustrix.remote.localcode.units import archive

        _, referenced = dumps_recording(self.module.trivial)
        plan = plan_code(referenced, None, needs=())
        start = time.perf_counter()
        data = archive(plan.units)
        return len(data), time.perf_counter() - start


def wait_until_idle(api_client: Any, timeout: float = 120) -> None:
    """No pod of the namespace is pending or running (earlier runs' pods have finished or gone)."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(NAMESPACE).items
        if not any(p.status.phase in ("Pending", "Running") for p in pods):
            return
        time.sleep(0.2)


def timed(api_client: Any, func: Callable[[], Any], expected: Any) -> float:
    wait_until_idle(api_client)
    start = time.perf_counter()
    value = func()
    elapsed = time.perf_counter() - start
    if value != expected:
        raise RuntimeError(f"wrong result: {value!r}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="benchmarks/results/k8s.json")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    repeats = max(3, args.repeats)

    from tests.testbed.k8s import start_k8s

    work = Path(tempfile.mkdtemp(prefix="clustrix-bench-k8s-"))
    os.environ.setdefault("CLUSTRIX_DATA_DIR", str(work / "registry"))
    started = time.monotonic()
    kube = start_k8s(work / "k8s")
    bring_up = time.monotonic() - started
    try:
        from clustrix import configure
        from clustrix.config.settings import resolve_config
        from clustrix_k8s.api import api_for

        configure(
            cluster_type="kubernetes",
            kubeconfig=str(kube.kubeconfig),
            image=kube.prepared_image,
            cleanup_on_success=True,
        )
        api_client = kube.api()
        ours = Clustrix()
        raw = RawJobs(api_client, kube.prepared_image)
        contenders: list[Any] = [ours, raw]
        print(f"Kubernetes testbed up in {bring_up:.1f} s at {kube.server}", flush=True)
        print("warm-up (runner ServiceAccount, Indexed Job probe, imports) ...", flush=True)
        cold_start = time.perf_counter()
        ours.single()
        cold = time.perf_counter() - cold_start
        raw.single()

        expected_map: dict[str, Any] = {ours.name: [trivial(x) for x in range(MAP_SIZE)], raw.name: MAP_SIZE}
        expected_single: dict[str, Any] = {ours.name: 2, raw.name: 1}
        single: dict[str, list[float]] = {c.name: [] for c in contenders}
        mapped: dict[str, list[float]] = {c.name: [] for c in contenders}
        for r in range(repeats):
            for contender in rotated(contenders, r):
                single[contender.name].append(timed(api_client, contender.single, expected_single[contender.name]))
            for contender in rotated(contenders, r):
                mapped[contender.name].append(timed(api_client, contender.map, expected_map[contender.name]))
            print(f"  run {r + 1}/{repeats} done", flush=True)

        with_code = ClustrixWithCode(work / "project")
        with_code.single()  # warm-up: the package's files are read and hashed once per process
        code_single: dict[str, list[float]] = {ours.name: [], with_code.name: []}
        for r in range(repeats):
            for contender in rotated([ours, with_code], r):
                code_single[contender.name].append(timed(api_client, contender.single, 2))
        archives = [with_code.archive() for _ in range(repeats)]
        archive_bytes = archives[0][0]
        archive_seconds = summary([seconds for _, seconds in archives])

        api = api_for(resolve_config())
        wait_until_idle(api_client)
        api.calls.clear()
        ours.map()
        calls = dict(sorted(api.calls.items()))
    finally:
        kube.stop()

    figures = {
        "single": {name: summary(times) for name, times in single.items()},
        "map100": {name: summary(times) for name, times in mapped.items()},
        "code": {name: summary(times) for name, times in code_single.items()},
    }
    polls = calls.get("list jobs", 0)
    result = {
        "benchmark": "k8s",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average": os.getloadavg(),
        },
        "versions": {
            name: importlib.metadata.version(name) for name in ("clustrix-core", "clustrix-k8s", "kubernetes")
        },
        "server": (
            "kube-apiserver/kube-controller-manager 1.20.2 (Debian source), etcd 3.4, "
            "kubelet over containerd 1.6 + runc"
        ),
        "testbed_bring_up_seconds": bring_up,
        "clustrix_cold_single_seconds": cold,
        "repeats": repeats,
        "figures": figures,
        "api_calls_per_map100": calls,
        "api_calls_per_map100_total": sum(calls.values()),
        "code_archive_bytes": archive_bytes,
        "code_archive_build_seconds": archive_seconds,
        "notes": "clustrix packs the 100 calls into 10 pods (one Job per task on 1.20, no Indexed Jobs); "
        "raw creates 100 Jobs of one pod each; cleanup_on_success deletes clustrix Jobs after the fetch",
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")

    print(f"\nKubernetes benchmark: medians of {repeats} runs (min-max), seconds\n")
    print(f"{'case':<8} {'contender':<28} {'median':>8} {'min':>8} {'max':>8}")
    print("-" * 64)
    for case, data in figures.items():
        for name, f in data.items():
            print(f"{case:<8} {name:<28} {f['median']:8.2f} {f['min']:8.2f} {f['max']:8.2f}")
    print(
        f"code case: {CODE_FILES}-module package archive {archive_bytes / 1e3:.1f} kB, "
        f"built in {archive_seconds['median'] * 1000:.1f} ms (median) at every submit"
    )
    print(f"\nclustrix cold single call (first of the process): {cold:.2f} s; testbed up in {bring_up:.1f} s")
    listed = ", ".join(f"{k} x{v}" for k, v in calls.items())
    print(f"API requests for one map of {MAP_SIZE} calls: {sum(calls.values())} ({listed}); {polls} poll round(s)")
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
