"""Benchmark clustrix-pbs against raw qsub on the real OpenPBS testbed (in its network namespace).

Run with ``nox -s bench`` (or ``python benchmarks/bench_pbs.py --output FILE`` as root in a
venv with clustrix-core, clustrix-pbs and clustrix-ssh). It starts the OpenPBS testbed of
``tests/testbed/openpbs.py`` (building it once per source tarball) and an sshd inside the
namespace. Every command, clustrix's and the raw ones, runs inside the namespace as the
unprivileged job user, so both sides pay the same ``nsenter``/``runuser`` cost.

Cases (issue 11), every contender in one run, runs interleaved round-robin:

(a) ``single``: one trivial call's round trip, clustrix on the login node and over SSH,
    against a raw ``qsub -W block=true -- /bin/true``. Target: clustrix (login node) at most
    1.0x raw + 0.5 s.
(b) ``map100``: ``map`` over 100 trivial calls against a raw ``qsub -J 1-100 -- /bin/true``
    waited for by ``qstat -x`` every 0.1 s until the array is finished. Target: at most 1.5x.
(c) ``commands``: the remote commands of one ``map`` (each a shell script through the
    transport) and the PBS commands inside them: one ``qsub``, one ``qstat`` per poll round.

Figures are medians of ``--repeats`` runs (at least 5) with min and max. A benchmark reports
and never asserts: the exit code is 0 even when a target is missed; the table says MISS.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.testbed brings OpenPBS and the sshd up

from bench_slurm import rotated, summary  # noqa: E402 - the benchmarks' shared figures, next to this file

SINGLE_TARGET = (1.0, 0.5)  # clustrix single <= 1.0 x raw + 0.5 s
MAP_TARGET = 1.5  # clustrix map / raw qsub -J, at most
MAP_SIZE = 100
PBS_COMMANDS = ("qsub", "qstat", "qdel")


def trivial(x: int) -> int:
    return x + 1


def script_of(data: bytes | None) -> str:
    """The shell script the engine sends on stdin (``<length>\\n<script><payload>``), or ""."""
    if not data:
        return ""
    head, _, rest = data.partition(b"\n")
    return rest[: int(head)].decode(errors="replace") if head.strip().isdigit() else ""


class Counting:
    """Counts the remote commands a transport runs and the PBS commands named in them."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.host = inner.host
        self.remote_commands = 0
        self.pbs: collections.Counter[str] = collections.Counter()

    def run(self, argv: Sequence[str], **kwargs: Any) -> Any:
        self.remote_commands += 1
        text = " ".join(argv) + " " + script_of(kwargs.get("input"))
        for word in PBS_COMMANDS:
            self.pbs[word] += len(re.findall(rf"(?<![\w/.-]){word}(?![\w.-])", text))
        return self.inner.run(argv, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="benchmarks/results/pbs.json")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    repeats = max(5, args.repeats)

    from clustrix import cluster
    from tests.testbed import openpbs
    from tests.testbed.transport_hook import TransportHook

    began = time.monotonic()
    bed = openpbs.start()
    bring_up = time.monotonic() - began
    ssh = openpbs.start_ssh(bed)
    work = tempfile.mkdtemp(prefix="clustrix-bench-pbs-")
    os.environ.setdefault("CLUSTRIX_DATA_DIR", os.path.join(work, "registry"))
    counting = Counting(bed.transport())
    hook = TransportHook("openpbs-netns-counted", lambda: counting)
    common = {"python_executable": openpbs.job_python(), "remote_work_dir": "~/.clustrix/bench-pbs"}
    local = cluster(
        cores=1, memory="200MB", time="00:05:00", cluster_type="pbs", cluster_host=openpbs.NETNS_HOST, **common
    )(trivial)
    counted = cluster(cluster_type="pbs", cluster_host=hook.host, **common)(trivial)
    over_ssh = cluster(cores=1, memory="200MB", time="00:05:00", **ssh.config(**common))(trivial)
    raw = bed.transport()

    def raw_single() -> int:
        raw.run(["qsub", "-W", "block=true", "-o", "/dev/null", "-e", "/dev/null", "--", "/bin/true"], check=True)
        return 2

    def raw_map() -> list[int]:
        job = raw.run(
            ["qsub", "-J", f"1-{MAP_SIZE}", "-o", "/dev/null", "-e", "/dev/null", "--", "/bin/true"], check=True
        ).stdout.strip()
        while " F " not in raw.run(["qstat", "-x", job]).stdout:
            time.sleep(0.1)
        return [trivial(x) for x in range(MAP_SIZE)]

    def idle() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and raw.run(["qselect", "-s", "QRHEB"]).stdout.strip():
            time.sleep(0.1)

    def timed(func: Callable[[], Any], expected: Any) -> float:
        idle()
        start = time.perf_counter()
        value = func()
        elapsed = time.perf_counter() - start
        if value != expected:
            raise RuntimeError(f"wrong result: {value!r}")
        return elapsed

    try:
        hook.install()
        print(
            f"OpenPBS testbed {'reused' if bed.reused else 'started'} in {bring_up:.1f} s; sshd port {ssh.server.port}"
        )
        singles: dict[str, Callable[[], Any]] = {
            "clustrix (login node)": lambda: local(1),
            "clustrix over SSH": lambda: over_ssh(1),
            "raw qsub -W block=true": raw_single,
        }
        maps: dict[str, Callable[[], Any]] = {
            "clustrix (login node)": lambda: list(local.map(range(MAP_SIZE))),
            "clustrix over SSH": lambda: list(over_ssh.map(range(MAP_SIZE))),
            f"raw qsub -J 1-{MAP_SIZE}": raw_map,
        }
        print("warm-up ...", flush=True)
        for func in (*singles.values(), *maps.values()):
            func()
        expected = [trivial(x) for x in range(MAP_SIZE)]
        single_times: dict[str, list[float]] = {name: [] for name in singles}
        map_times: dict[str, list[float]] = {name: [] for name in maps}
        for r in range(repeats):
            for name in rotated(list(singles), r):
                single_times[name].append(timed(singles[name], 2))
            for name in rotated(list(maps), r):
                map_times[name].append(timed(maps[name], expected))
            print(f"  run {r + 1}/{repeats} done", flush=True)

        counted(1)  # the environment check and the flavour, once per host: not part of a map
        counting.remote_commands = 0
        counting.pbs.clear()
        idle()
        list(counted.map(range(MAP_SIZE)))
        commands = {"remote_commands": counting.remote_commands, "pbs": dict(counting.pbs)}
    finally:
        ssh.stop()

    figures = {
        "single": {name: summary(t) for name, t in single_times.items()},
        "map100": {name: summary(t) for name, t in map_times.items()},
    }
    raw_single_median = figures["single"]["raw qsub -W block=true"]["median"]
    raw_map_median = figures["map100"][f"raw qsub -J 1-{MAP_SIZE}"]["median"]
    factor, extra = SINGLE_TARGET
    targets = []
    for name in ("clustrix (login node)", "clustrix over SSH"):
        ours = figures["single"][name]["median"]
        targets.append(
            (f"single: {name} vs raw (<= {factor}x + {extra} s)", ours, ours <= factor * raw_single_median + extra)
        )
        ratio = figures["map100"][name]["median"] / raw_map_median
        targets.append((f"map100: {name} / raw qsub -J (<= {MAP_TARGET}x)", ratio, ratio <= MAP_TARGET))
    polls = commands["pbs"].get("qstat", 0)
    commands_ok = commands["pbs"].get("qsub", 0) == 1 and polls <= commands["remote_commands"] - 1

    print(f"\nPBS benchmark: medians of {repeats} runs (min-max), seconds\n")
    print(f"{'case':<8} {'contender':<26} {'median':>8} {'min':>8} {'max':>8}")
    print("-" * 62)
    for case, data in figures.items():
        for name, f in data.items():
            print(f"{case:<8} {name:<26} {f['median']:8.2f} {f['min']:8.2f} {f['max']:8.2f}")
    print("\ntargets:")
    misses = []
    for label, value, met in targets:
        print(f"  {label:<62} {value:6.2f}  {'met' if met else 'MISS'}")
        if not met:
            misses.append(label)
    print(
        f"\ncommands for one map of {MAP_SIZE}: {commands['remote_commands']} remote command(s); "
        f"PBS: {', '.join(f'{k} x{v}' for k, v in sorted(commands['pbs'].items()))}  {'met' if commands_ok else 'MISS'}"
    )
    if not commands_ok:
        misses.append("commands per map")
    report = {
        "benchmark": "pbs",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "testbed": {"openpbs": bed.prefix.name, "reused": bed.reused, "bring_up_seconds": round(bring_up, 2)},
        "repeats": repeats,
        "figures": figures,
        "targets": [{"what": label, "value": round(value, 3), "met": met} for label, value, met in targets],
        "commands_per_map": {**commands, "met": commands_ok},
        "missed": misses,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nfigures written to {os.path.relpath(output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
