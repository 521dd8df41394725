"""Benchmark clustrix-slurm against submitit and raw sbatch on the real SLURM testbed.

Run with ``nox -s bench`` (or ``python benchmarks/bench_slurm.py --output FILE`` as root in
a venv with clustrix-core, clustrix-slurm, clustrix-ssh and submitit). It starts the
SLURM and sshd testbeds of ``tests/testbed`` (or reuses a healthy cluster).

Cases (issue 4), every contender in one run, runs interleaved round-robin:

(a) ``single``: one trivial call's round trip (submit, run, result back).
    clustrix goes through SSH to the 127.0.0.1 sshd as the unprivileged ``clustrix-test``;
    submitit runs locally on the login node. Target: clustrix at most 1.0x submitit.
(b) ``map100``: map over 100 trivial calls. clustrix ``.map`` (over SSH, and on the login
    node), submitit ``map_array``, and a raw ``sbatch --array=0-99 --wrap true`` waited for
    by polling ``squeue`` every 0.1 s. Targets: clustrix at most 0.5x submitit and at
    most 1.5x raw sbatch.
(c) ``operations``: remote commands and SFTP requests of each operation (the first submit
    of a process, a later submit, each poll round, the fetch) for one call and for a map of
    100, driven through the scheduler hooks and counted by the SSH transport itself (and by a
    counting local transport on the login node). Targets: a submit is at most 2 commands
    (1 once the environment was checked), a poll round 1, a fetch at most 1, and no SFTP
    request for payloads under 1 MiB.

Each timed run starts when the cluster is idle (no job pending, running or completing),
and the order of the contenders rotates from run to run. Every contender uses its default
polling (clustrix: 50 ms backing off to ``job_poll_interval`` = 1 s; submitit: ``job.result()``). Figures are medians of
``--repeats`` runs (at least 5) with min and max. A benchmark reports and never asserts:
the exit code is 0 even when a target is missed; the table says MISS.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.testbed brings the cluster and sshd up

SINGLE_TARGET = 1.0  # clustrix over SSH / submitit, at most
MAP_VS_SUBMITIT_TARGET = 0.5  # clustrix map / submitit map_array, at most
MAP_VS_RAW_TARGET = 1.5  # clustrix map / raw sbatch --array, at most
MAP_SIZE = 100
#: The remote venv holds clustrix-core's closure (the sshd user's python3 is Debian's).
REPLICATE = ["clustrix-core"]


def trivial(x: int) -> int:
    return x + 1


# ---- counting operations ----------------------------------------------------------------
class CountingLocal:
    """A local transport that counts the commands run through it (each one a round trip over SSH)."""

    def __init__(self) -> None:
        from clustrix.transport import LocalTransport

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


def count_operations(options: dict[str, Any], size: int, *, local: bool) -> dict[str, Any]:
    """Commands and SFTP requests of each operation of one job of ``size`` calls, driven through the hooks.

    ``submit_first`` is the first submit of a process (the environment check runs once);
    ``submit`` a later one; ``poll_round`` each round until final; ``fetch`` bringing the results back.
    """
    from clustrix import environment
    from clustrix.config import resolve_config
    from clustrix.jobs import JobSpec
    from clustrix.plugins import transport_for
    from clustrix_slurm import SlurmScheduler

    config = resolve_config(overrides=options)
    transport: Any = CountingLocal() if local else transport_for(config)
    scheduler = SlurmScheduler(transport_factory=lambda _config: transport)
    arguments = [((i,), {}) for i in range(size)]

    def spec() -> JobSpec:
        return JobSpec(name="trivial", func=trivial, arguments=arguments, config=config)

    environment.forget_prepared()
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
    if [o.value for o in outcomes if o is not None] != [trivial(i) for i in range(size)]:
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


# ---- contenders -------------------------------------------------------------------------
class Contender:
    name = ""
    description = ""

    def single(self) -> int:
        raise NotImplementedError

    def map(self) -> list[int]:
        raise NotImplementedError


class Clustrix(Contender):
    def __init__(self, name: str, options: dict[str, Any], description: str) -> None:
        from clustrix import cluster

        self.name = name
        self.description = description
        self.function = cluster(cores=1, memory="200MB", time="00:05:00", **options)(trivial)

    def single(self) -> int:
        value: int = self.function(1)
        return value

    def map(self) -> list[int]:
        return list(self.function.map(range(MAP_SIZE)))


class Submitit(Contender):
    name = "submitit (local)"

    def __init__(self, folder: str) -> None:
        import submitit

        self.executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
        self.executor.update_parameters(timeout_min=5, cpus_per_task=1, mem_gb=0.2)
        self.description = (
            f"submitit {importlib.metadata.version('submitit')} AutoExecutor(cluster='slurm') on the login node; "
            "submit(...).result() and map_array(...) then result() of each job"
        )

    def single(self) -> int:
        value: int = self.executor.submit(trivial, 1).result()
        return value

    def map(self) -> list[int]:
        jobs = self.executor.map_array(trivial, list(range(MAP_SIZE)))
        return [job.result() for job in jobs]


class RawSbatch(Contender):
    name = "raw sbatch --array"
    description = f"sbatch --array=0-{MAP_SIZE - 1} --wrap true, then squeue every 0.1 s until every task is final"

    def map(self) -> list[int]:
        job = subprocess.run(
            ["sbatch", "--parsable", f"--array=0-{MAP_SIZE - 1}", "--output=/dev/null", "--wrap", "true"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        while True:
            states = subprocess.run(
                ["squeue", "--noheader", "--array", "--states=all", f"--jobs={job}", "--format=%T"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            if len(states) >= MAP_SIZE and not {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING"} & set(states):
                return list(range(1, MAP_SIZE + 1))
            time.sleep(0.1)


# ---- running ----------------------------------------------------------------------------
def wait_until_idle(timeout: float = 60) -> None:
    """Every timed run starts on a quiet cluster: nothing running, completing or about to start.

    Pending jobs SLURM will never start (e.g. a time beyond a partition's limit) do not count.
    """
    from clustrix_slurm.states import never_runnable

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = subprocess.run(
            ["squeue", "--noheader", "--states=PENDING,RUNNING,CONFIGURING,COMPLETING", "--format=%T|%r"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.splitlines()
        busy = [line for line in lines if not (line.startswith("PENDING|") and never_runnable(line.split("|", 1)[1]))]
        if not busy:
            return
        time.sleep(0.1)


def rotated(items: Sequence[Any], shift: int) -> list[Any]:
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def timed(func: Callable[[], Any], expected: Any) -> float:
    wait_until_idle()
    start = time.perf_counter()
    value = func()
    elapsed = time.perf_counter() - start
    if value != expected:
        raise RuntimeError(f"wrong result: {value!r}")
    return elapsed


def summary(times: list[float]) -> dict[str, float]:
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": len(times)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="benchmarks/results/slurm.json")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    repeats = max(5, args.repeats)

    from tests.testbed import slurm as slurm_testbed
    from tests.testbed.sshd import start_sshd

    bed = slurm_testbed.start()
    server = start_sshd(slurm_testbed.TEST_USER)
    work = tempfile.mkdtemp(prefix="clustrix-bench-slurm-")
    os.environ.setdefault("CLUSTRIX_DATA_DIR", os.path.join(work, "registry"))
    try:
        ssh_options = server.config(
            cluster_type="slurm", replicate_distributions=REPLICATE, remote_work_dir="~/.clustrix/bench"
        )
        local_options = {
            "cluster_type": "slurm",
            "remote_work_dir": os.path.join(work, "jobs"),
            "python_executable": sys.executable,
        }
        over_ssh = Clustrix(
            "clustrix over SSH",
            ssh_options,
            "clustrix-slurm through clustrix-ssh to 127.0.0.1 as clustrix-test, replicated venv, default polling",
        )
        on_login = Clustrix("clustrix (local)", local_options, "clustrix-slurm on the login node, default polling")
        submitit = Submitit(os.path.join(work, "submitit"))
        raw = RawSbatch()

        print(f"SLURM testbed {'reused' if bed.reused else 'started'}; sshd on {server.host}:{server.port}")
        print("warm-up (environment check/venv build, connections, imports) ...", flush=True)
        singles: list[Contender] = [over_ssh, on_login, submitit]
        maps: list[Contender] = [over_ssh, on_login, submitit, raw]
        for contender in singles:
            contender.single()
        for contender in maps:
            contender.map()

        expected_map = [trivial(x) for x in range(MAP_SIZE)]
        single: dict[str, list[float]] = {c.name: [] for c in singles}
        mapped: dict[str, list[float]] = {c.name: [] for c in maps}
        for r in range(repeats):
            for contender in rotated(singles, r):
                single[contender.name].append(timed(contender.single, 2))
            for contender in rotated(maps, r):
                mapped[contender.name].append(timed(contender.map, expected_map))
            print(f"  run {r + 1}/{repeats} done", flush=True)

        counts: list[dict[str, Any]] = []
        for name, options, local in (
            ("clustrix over SSH", ssh_options, False),
            ("clustrix (local)", local_options, True),
        ):
            for size in (1, MAP_SIZE):
                wait_until_idle()
                counts.append({"contender": name, **count_operations(options, size, local=local)})
    finally:
        server.cleanup()

    figures = {
        "single": {name: summary(times) for name, times in single.items()},
        "map100": {name: summary(times) for name, times in mapped.items()},
    }
    med = {case: {name: f["median"] for name, f in data.items()} for case, data in figures.items()}
    #: (case, clustrix contender, reference contender, what the reference is called, target ratio)
    comparisons = [
        ("single", "clustrix over SSH", "submitit (local)", "submitit", SINGLE_TARGET),
        ("map100", "clustrix over SSH", "submitit (local)", "submitit map_array", MAP_VS_SUBMITIT_TARGET),
        ("map100", "clustrix over SSH", "raw sbatch --array", "raw sbatch --array", MAP_VS_RAW_TARGET),
        ("map100", "clustrix (local)", "submitit (local)", "submitit map_array", MAP_VS_SUBMITIT_TARGET),
        ("map100", "clustrix (local)", "raw sbatch --array", "raw sbatch --array", MAP_VS_RAW_TARGET),
    ]
    targets = [
        (f"{case}: {ours} / {label}", med[case][ours] / med[case][theirs], target)
        for case, ours, theirs, label, target in comparisons
    ]
    command_checks: list[tuple[dict[str, Any], bool]] = []
    for entry in counts:
        ok = (
            entry["submit_first"]["commands"] <= 2
            and entry["submit"]["commands"] <= 1
            and entry["submit"]["sftp_requests"] == 0
            and entry["poll_round_max"]["commands"] <= 1
            and entry["poll_round_max"]["sftp_requests"] == 0
            and entry["fetch"]["commands"] <= 1
            and entry["fetch"]["sftp_requests"] == 0
        )
        command_checks.append((entry, ok))

    print(f"\nSLURM benchmark: medians of {repeats} runs (min-max), seconds\n")
    print(f"{'case':<8} {'contender':<22} {'median':>8} {'min':>8} {'max':>8}")
    print("-" * 58)
    for case, data in figures.items():
        for name, f in data.items():
            print(f"{case:<8} {name:<22} {f['median']:8.2f} {f['min']:8.2f} {f['max']:8.2f}")
    print("\ntargets:")
    misses = []
    for label, ratio, target in targets:
        verdict = "met" if ratio <= target else "MISS"
        if verdict == "MISS":
            misses.append(label)
        print(f"  {label:<50} {ratio:5.2f}x (target <= {target}x)  {verdict}")
    print("\nremote operations per job (commands / SFTP requests):")
    header = f"{'calls':>5} {'1st submit':>11} {'submit':>8} {'poll round':>11} {'rounds':>7} {'fetch':>7}"
    print(f"  {'contender':<20} {header}")
    for entry, ok in command_checks:
        verdict = "met" if ok else "MISS"
        if not ok:
            misses.append(f"operations ({entry['contender']}, {entry['calls']} calls)")

        def pair(ops: dict[str, int]) -> str:
            return f"{ops['commands']}/{ops['sftp_requests']}"

        print(
            f"  {entry['contender']:<20} {entry['calls']:>5} {pair(entry['submit_first']):>11} "
            f"{pair(entry['submit']):>8} {pair(entry['poll_round_max']):>11} {entry['poll_rounds']:>7} "
            f"{pair(entry['fetch']):>7}  {verdict}"
        )
    print("  (targets: first submit <= 2 commands, later ones 1; a poll round 1; fetch <= 1; no SFTP request)")
    if misses:
        print(f"\n*** MISS: {'; '.join(misses)} ***")
    else:
        print("\nall clustrix-slurm targets met")

    report = {
        "benchmark": "slurm",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "testbed": {"cpus": bed.cpus, "cgroups": bed.cgroups, "accounting": bed.accounting},
        "repeats": repeats,
        "contenders": {c.name: c.description for c in (over_ssh, on_login, submitit, raw)},
        "figures": figures,
        "targets": [
            {"what": label, "ratio": round(ratio, 3), "target": target, "met": ratio <= target}
            for label, ratio, target in targets
        ],
        "operations": [{**entry, "met": ok} for entry, ok in command_checks],
        "missed": misses,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nfigures written to {os.path.relpath(output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
