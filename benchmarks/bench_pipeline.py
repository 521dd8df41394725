"""Benchmark a 3-stage pipeline of 100-call maps on SLURM over SSH: scheduler dependencies vs waiting in the client.

Run with ``nox -s bench`` (or ``python benchmarks/bench_pipeline.py --output FILE`` as root in a
venv with clustrix-core, clustrix-slurm and clustrix-ssh). It starts the SLURM and sshd testbeds
of ``tests/testbed`` (or reuses a healthy cluster). Issue 21.

Contenders, runs interleaved round-robin, each on an idle cluster:

- ``dependencies``: ``a = f.submit_map(range(100))``, ``b = g.submit_map(a)``, ``c = h.submit_map(b)``:
  every stage is in the queue when the last submit returns (SLURM ``aftercorr``/``afterok``), and the
  values travel on the cluster; then ``[x.result() for x in c]``.
- ``client waits``: ``a = f.map(range(100))``, ``b = g.map(a)``, ``c = h.map(b)``: each stage is
  submitted when the previous one's results are home.

Figures: time from the first submit to the final result, and how long the submitting process
must stay alive (dependencies: until the last submit returned; client waits: the whole pipeline).
Goal: the submit calls only, under 3 s. Medians of ``--repeats`` runs (at least 5) with min and max.
A benchmark reports and never asserts.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # tests.testbed brings the cluster and sshd up

import harness  # noqa: E402  (benchmarks/, the script's own folder)

MAP_SIZE = 100
ALIVE_GOAL = 3.0


def stage_one(x: int) -> int:
    return x + 1


def stage_two(x: int) -> int:
    return 2 * x


def stage_three(x: int) -> int:
    return x - 1


EXPECTED = [2 * (x + 1) - 1 for x in range(MAP_SIZE)]


def with_dependencies(functions: tuple[Any, Any, Any]) -> tuple[float, float]:
    f, g, h = functions
    start = time.perf_counter()
    a = f.submit_map(range(MAP_SIZE))
    b = g.submit_map(a)
    c = h.submit_map(b)
    alive = time.perf_counter() - start
    assert all(x.handle is not None for x in c), "the third stage was chained in the client"
    values = [x.result(timeout=900) for x in c]
    total = time.perf_counter() - start
    assert values == EXPECTED, values[:5]
    return total, alive


def waiting_in_the_client(functions: tuple[Any, Any, Any]) -> tuple[float, float]:
    f, g, h = functions
    start = time.perf_counter()
    values = h.map(g.map(f.map(range(MAP_SIZE), progress=False), progress=False), progress=False)
    total = time.perf_counter() - start
    assert values == EXPECTED, values[:5]
    return total, total


def main(argv: list[str] | None = None) -> int:
    import importlib

    from clustrix import cluster
    from tests.testbed.sshd import start_sshd

    argv = list(sys.argv[1:] if argv is None else argv)
    scheduler = "slurm"  # --scheduler sge runs the same pipeline on the Grid Engine testbed
    if "--scheduler" in argv:
        at = argv.index("--scheduler")
        scheduler = argv[at + 1]
        del argv[at : at + 2]
    wait_until_idle = importlib.import_module(f"bench_{scheduler}").wait_until_idle
    testbed = importlib.import_module(f"tests.testbed.{scheduler}")
    default = (
        "benchmarks/results/pipeline.json" if scheduler == "slurm" else f"benchmarks/results/pipeline-{scheduler}.json"
    )
    output, repeats = harness.arguments(__doc__ or "", default, argv)
    bed = testbed.start()
    server = start_sshd(testbed.TEST_USER)
    work = tempfile.mkdtemp(prefix="clustrix-bench-pipeline-")
    os.environ.setdefault("CLUSTRIX_DATA_DIR", os.path.join(work, "registry"))
    contenders = {"dependencies": with_dependencies, "client waits": waiting_in_the_client}
    times: dict[str, dict[str, list[float]]] = {name: {"total": [], "alive": []} for name in contenders}
    try:
        options = server.config(
            cluster_type=scheduler,
            replicate_distributions=["clustrix-core"],
            remote_work_dir="~/.clustrix/bench-pipeline",
        )
        functions = tuple(cluster(**options)(fn) for fn in (stage_one, stage_two, stage_three))
        print(f"{scheduler} testbed {'reused' if bed.reused else 'started'}; sshd on {server.host}:{server.port}")
        with_dependencies(functions)  # warm-up: the environment check and the venv, once per process
        for run in range(repeats):
            for name in harness.rotated(list(contenders), run):
                wait_until_idle()
                total, alive = contenders[name](functions)
                times[name]["total"].append(total)
                times[name]["alive"].append(alive)
                print(f"  run {run + 1}: {name:<14} total {total:6.2f} s, process alive {alive:6.2f} s", flush=True)
    finally:
        server.cleanup()

    figures = {case: {name: harness.summary(t[case]) for name, t in times.items()} for case in ("total", "alive")}
    harness.print_figures(
        f"3-stage pipeline of {MAP_SIZE}-call maps on {scheduler} over SSH, seconds (total: first submit to final "
        "result; alive: the submitting process)",
        figures,
    )
    alive = figures["alive"]["dependencies"]["median"]
    speedup = figures["total"]["client waits"]["median"] / max(figures["total"]["dependencies"]["median"], 1e-9)
    verdict = "met" if alive < ALIVE_GOAL else "MISS"
    print(f"\nsubmitting process alive with dependencies: {alive:.2f} s (goal < {ALIVE_GOAL} s) {verdict}")
    print(f"first submit to final result: client waits / dependencies = {speedup:.2f}x")
    report = {
        "scheduler": scheduler,
        "testbed": {"cpus": getattr(bed, "cpus", None), "slots": getattr(bed, "slots", None)},
        "repeats": repeats,
        "map_size": MAP_SIZE,
        "figures": figures,
        "targets": [{"what": "process alive with dependencies (s)", "value": alive, "goal": ALIVE_GOAL}],
        "missed": [] if verdict == "met" else ["process alive"],
    }
    harness.write_report(output, f"pipeline-{scheduler}", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
