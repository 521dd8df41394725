"""What the scheduler benchmarks share: contenders, timed runs on an idle cluster, medians, operation counts.

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
        self.options = options
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
        Clustrix(
            "clustrix over SSH",
            over_ssh,
            f"{dist} through clustrix-ssh to 127.0.0.1 as {server.user}, replicated venv, default polling",
            function,
            map_size,
        ),
        Clustrix("clustrix (local)", local, f"{dist} on the {host}, default polling", function, map_size),
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


# ---- counting operations ----------------------------------------------------------------
class CountingLocal:
    """A local transport that counts the commands run through it (each one a round trip over SSH)."""

    def __init__(self) -> None:
        from clustrix.plugin.transport import LocalTransport

        self.inner = LocalTransport()
        self.host = self.inner.host
        self.commands = 0

    def run(self, argv: Sequence[str], **kwargs: Any) -> Any:
        self.commands += 1
        return self.inner.run(argv, **kwargs)

    def operations(self) -> dict[str, int]:
        return {"commands": self.commands, "sftp_requests": 0}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in ("commands", "sftp_requests")}


def count_operations(
    scheduler_class: Callable[..., Any],
    function: Callable[[int], int],
    options: dict[str, Any],
    size: int,
    *,
    local: bool,
) -> dict[str, Any]:
    """Commands and SFTP requests of each operation of one job of ``size`` calls, driven through the hooks.

    ``submit_first`` is the first submit of a process (the environment check runs once);
    ``submit`` a later one; ``poll_round`` each round until final; ``fetch`` bringing the results back.
    The SSH transport counts its own; on this host a :class:`CountingLocal` does.
    """
    from clustrix.config.settings import resolve_config
    from clustrix.plugin.manager import transport_for
    from clustrix.plugin.types import JobSpec
    from clustrix.remote.environment.prepare import forget_prepared

    config = resolve_config(overrides=options)
    transport: Any = CountingLocal() if local else transport_for(config)
    scheduler = scheduler_class(transport_factory=lambda _config: transport)
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [((i,), {}) for i in range(size)]

    def spec() -> JobSpec:
        return JobSpec(name=function.__name__, func=function, arguments=calls, config=config)

    forget_prepared()
    before = transport.operations()
    scheduler.clustrix_submit(spec=spec(), wake=lambda: None)
    first = _delta(before, transport.operations())
    before = transport.operations()
    handle = scheduler.clustrix_submit(spec=spec(), wake=lambda: None)
    submit = _delta(before, transport.operations())
    rounds: list[dict[str, int]] = []
    while True:
        before = transport.operations()
        status = scheduler.clustrix_poll(handles=[handle], config=config).get(handle.job_id)
        rounds.append(_delta(before, transport.operations()))
        if status is not None and status.state.final:
            break
        time.sleep(0.2)
    before = transport.operations()
    outcomes = scheduler.clustrix_fetch(handle=handle, config=config)
    fetch = _delta(before, transport.operations())
    if [o.value for o in outcomes if o is not None] != [function(i) for i in range(size)]:
        raise RuntimeError("wrong results while counting operations")
    worst_round = {key: max(r[key] for r in rounds) for key in ("commands", "sftp_requests")}
    return {
        "calls": size,
        "submit_first": first,
        "submit": submit,
        "poll_rounds": len(rounds),
        "poll_round_max": worst_round,
        "fetch": fetch,
    }


def measure(
    scheduler_class: Callable[..., Any],
    singles: Sequence[Contender],
    maps: Sequence[Contender],
    counted: tuple[Clustrix, Clustrix],
    function: Callable[[int], int],
    map_size: int,
    repeats: int,
    wait_until_idle: Callable[[], None],
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, float]], list[dict[str, Any]]]:
    """:func:`run_cases` of ``function(1)`` and its map over ``range(map_size)`` (summarised by
    :func:`figures_and_medians`), then the operations of the two clustrix contenders ``counted`` (over SSH,
    on this host; see :func:`count_operations`) at one call and at ``map_size``."""
    single, mapped = run_cases(
        singles,
        maps,
        repeats=repeats,
        expected_single=function(1),
        expected_map=[function(x) for x in range(map_size)],
        wait_until_idle=wait_until_idle,
    )
    counts: list[dict[str, Any]] = []
    for contender, local in zip(counted, (False, True), strict=True):
        for size in (1, map_size):
            wait_until_idle()
            ops = count_operations(scheduler_class, function, contender.options, size, local=local)
            counts.append({"contender": contender.name, **ops})
    return (*figures_and_medians(single, mapped), counts)


def figures_and_medians(
    single: Mapping[str, list[float]], mapped: Mapping[str, list[float]]
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, float]]]:
    """The summary of each case and contender (``single``, ``map100``) and, beside it, just the medians."""
    figures = {
        "single": {name: summary(times) for name, times in single.items()},
        "map100": {name: summary(times) for name, times in mapped.items()},
    }
    med = {case: {name: f["median"] for name, f in data.items()} for case, data in figures.items()}
    return figures, med


def operations_met(entry: Mapping[str, Any]) -> bool:
    """A submit at most 2 commands (1 once the environment was checked), a poll round 1, a fetch at most 1, no SFTP."""
    return bool(
        entry["submit_first"]["commands"] <= 2
        and entry["submit"]["commands"] <= 1
        and entry["submit"]["sftp_requests"] == 0
        and entry["poll_round_max"]["commands"] <= 1
        and entry["poll_round_max"]["sftp_requests"] == 0
        and entry["fetch"]["commands"] <= 1
        and entry["fetch"]["sftp_requests"] == 0
    )


def print_operations(checks: Sequence[tuple[Mapping[str, Any], bool]], misses: list[str]) -> None:
    """The operations table; a missed target is added to ``misses``."""
    print("\nremote operations per job (commands / SFTP requests):")
    header = f"{'calls':>5} {'1st submit':>11} {'submit':>8} {'poll round':>11} {'rounds':>7} {'fetch':>7}"
    print(f"  {'contender':<20} {header}")

    def pair(ops: Mapping[str, int]) -> str:
        return f"{ops['commands']}/{ops['sftp_requests']}"

    for entry, ok in checks:
        if not ok:
            misses.append(f"operations ({entry['contender']}, {entry['calls']} calls)")
        print(
            f"  {entry['contender']:<20} {entry['calls']:>5} {pair(entry['submit_first']):>11} "
            f"{pair(entry['submit']):>8} {pair(entry['poll_round_max']):>11} {entry['poll_rounds']:>7} "
            f"{pair(entry['fetch']):>7}  {'met' if ok else 'MISS'}"
        )
    print("  (targets: first submit <= 2 commands, later ones 1; a poll round 1; fetch <= 1; no SFTP request)")
