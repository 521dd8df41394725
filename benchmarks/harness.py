"""What the scheduler benchmarks share: contenders, timed runs on an idle cluster, medians, the table.

``bench_slurm.py`` and ``bench_sge.py`` import it (a script's own folder is on ``sys.path``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


def arguments(doc: str, default_output: str, argv: list[str] | None) -> tuple[str, int]:
    """``--output FILE`` and ``--repeats N`` (at least 5) of a benchmark script whose docstring is ``doc``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--output", default=default_output)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    return str(args.output), max(5, args.repeats)


class Contender:
    """One way of running the cases: ``single()`` one trivial call, ``map()`` the map of many."""

    name = ""
    description = ""

    def single(self) -> int:
        raise NotImplementedError

    def map(self) -> list[int]:
        raise NotImplementedError


def rotated(items: Sequence[Any], shift: int) -> list[Any]:
    """``items`` started at ``shift``: contenders take turns at going first."""
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def timed(func: Callable[[], Any], expected: Any, wait_until_idle: Callable[[], None]) -> float:
    """Seconds ``func()`` takes, started on an idle cluster; a wrong result is an error, not a figure."""
    wait_until_idle()
    start = time.perf_counter()
    value = func()
    elapsed = time.perf_counter() - start
    if value != expected:
        raise RuntimeError(f"wrong result: {value!r}")
    return elapsed


def summary(times: list[float]) -> dict[str, float]:
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": len(times)}


def print_figures(title: str, figures: Mapping[str, Mapping[str, Mapping[str, float]]]) -> None:
    """The case / contender / median / min / max table."""
    print(f"\n{title}\n")
    print(f"{'case':<8} {'contender':<22} {'median':>8} {'min':>8} {'max':>8}")
    print("-" * 58)
    for case, data in figures.items():
        for name, f in data.items():
            print(f"{case:<8} {name:<22} {f['median']:8.2f} {f['min']:8.2f} {f['max']:8.2f}")


def write_report(output: str, benchmark: str, report: Mapping[str, Any]) -> None:
    """The JSON file of a run: the figures with the date and the machine they were measured on."""
    frame = {
        "benchmark": benchmark,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**frame, **report}, indent=2) + "\n")
    print(f"\nfigures written to {os.path.relpath(path)}")


class Clustrix(Contender):
    """``function`` decorated for one clustrix configuration; ``map`` is ``.map`` over ``range(map_size)``."""

    def __init__(
        self, name: str, options: dict[str, Any], description: str, function: Callable[[int], int], map_size: int
    ) -> None:
        from clustrix import cluster

        self.name = name
        self.description = description
        self.map_size = map_size
        self.function = cluster(cores=1, memory="200MB", time="00:05:00", **options)(function)

    def single(self) -> int:
        value: int = self.function(1)
        return value

    def map(self) -> list[int]:
        return list(self.function.map(range(self.map_size)))


def clustrix_pair(
    cluster_type: str,
    server: Any,
    work: str,
    function: Callable[[int], int],
    map_size: int,
    *,
    kind: type[Clustrix] = Clustrix,
    host: str = "login node",
) -> tuple[Clustrix, Clustrix]:
    """The two clustrix contenders: over the testbed sshd as its unprivileged user, and on this host."""
    import sys

    over_ssh = server.config(
        cluster_type=cluster_type,
        replicate_distributions=["clustrix-core"],
        remote_work_dir=f"~/.clustrix/bench-{cluster_type}",
    )
    local = {
        "cluster_type": cluster_type,
        "remote_work_dir": os.path.join(work, "jobs"),
        "python_executable": sys.executable,
    }
    dist = f"clustrix-{cluster_type}"
    return (
        kind(
            "clustrix over SSH",
            over_ssh,
            f"{dist} through clustrix-ssh to 127.0.0.1 as {server.user}, replicated venv, default polling",
            function,
            map_size,
        ),
        kind("clustrix (local)", local, f"{dist} on the {host}, default polling", function, map_size),
    )


def run_cases(
    singles: Sequence[Contender],
    maps: Sequence[Contender],
    *,
    repeats: int,
    expected_single: Any,
    expected_map: Any,
    wait_until_idle: Callable[[], None],
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Warm every contender up, then ``repeats`` rounds of both cases, contenders in rotating order."""
    print("warm-up (environment check/venv build, connections, imports) ...", flush=True)
    for contender in singles:
        contender.single()
    for contender in maps:
        contender.map()
    single: dict[str, list[float]] = {c.name: [] for c in singles}
    mapped: dict[str, list[float]] = {c.name: [] for c in maps}
    for r in range(repeats):
        for contender in rotated(singles, r):
            single[contender.name].append(timed(contender.single, expected_single, wait_until_idle))
        for contender in rotated(maps, r):
            mapped[contender.name].append(timed(contender.map, expected_map, wait_until_idle))
        print(f"  run {r + 1}/{repeats} done", flush=True)
    return single, mapped
