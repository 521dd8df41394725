"""Benchmark clustrix's local executor against joblib (loky) and ProcessPoolExecutor.

Run with ``nox -s bench`` (or ``python benchmarks/bench_local.py --output FILE``).

Two cases, every contender in one run, runs interleaved round-robin so that drift in
machine load hits all contenders alike:

(a) ``tiny``: map over 10,000 tiny calls (``x + 1``).
    Target (issue 14): clustrix's median wall time at most 0.3x joblib's.
(b) ``cpu``: 8 CPU-bound calls of about 1 s each (a pure-Python loop calibrated once
    at start). Target (issue 14): clustrix's speed-up over serial at least joblib's in the same run.

Each contender gets one untimed warm-up run per case first (pools are reused, as
joblib's loky reuses its executor); the very first call of each contender, which starts
its worker processes, is timed separately and reported as the "cold" time (target, issue 14:
clustrix's at most joblib's). Before that, each contender's import and first call are timed
in ``COLD_PROCESSES`` fresh interpreters (the "cold process" figure, same target: what a
script waits for its first result). Figures are medians of ``--repeats`` runs (at least 5),
with min and max.

Benchmarks report, they do not assert: the exit code is 0 even when a target is missed.
The functions that run in worker processes are defined at module level: run as
``__main__``, cloudpickle (clustrix) ships them by value, and joblib/loky and
ProcessPoolExecutor can import or pickle them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import importlib.metadata
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

TINY_CALLS = 10_000
CPU_CALLS = 8
CPU_CALL_SECONDS = 1.0
WORKERS = 2
TINY_TARGET_RATIO = 0.3  # clustrix wall time / joblib wall time, at most
CPU_TARGET = "joblib"  # clustrix's speed-up over serial must be at least this contender's, same run


# ---- work functions (module level: they run in worker processes) -------------------
def tiny(x: int) -> int:
    return x + 1


def spin(n: int) -> int:
    """Pure-Python CPU work: ``n`` loop iterations, holding the GIL the whole time."""
    total = 0
    for i in range(n):
        total = (total + i * i) % 1_000_003
    return total


def calibrate(seconds: float) -> tuple[int, float]:
    """Loop count for ``spin`` that takes about ``seconds`` of CPU here; also the measured CPU time.

    CPU time of this thread (not wall time) is measured, so that other processes competing
    for the cores while calibrating do not inflate the amount of work.
    """
    n = 100_000
    while True:
        start = time.thread_time()
        spin(n)
        elapsed = time.thread_time() - start
        if elapsed >= 0.2:
            break
        n *= 2
    n = int(n * seconds / elapsed)
    times = []
    for _ in range(3):
        start = time.thread_time()
        spin(n)
        times.append(time.thread_time() - start)
    return n, statistics.median(times)


# ---- contenders -----------------------------------------------------------------------
class Contender:
    name = ""

    def setup(self) -> None: ...

    def map(self, func: Callable[[int], int], items: list[int]) -> list[int]:
        raise NotImplementedError

    def teardown(self) -> None: ...

    def describe(self) -> str:
        return ""


class Serial(Contender):
    name = "serial"

    def map(self, func: Callable[[int], int], items: list[int]) -> list[int]:
        return [func(x) for x in items]

    def describe(self) -> str:
        return "a list comprehension in this process"


class Clustrix(Contender):
    name = "clustrix"

    def setup(self) -> None:
        # The statement a user writes to get the API, as ``import joblib`` is joblib's:
        # ``import clustrix`` alone is lazy and would leave the import of ``cluster``
        # (and what it needs) to the first call.
        from clustrix import cluster

        self.cluster = cluster

    def map(self, func: Callable[[int], int], items: list[int]) -> list[int]:
        return self.cluster(func).map(items)

    def describe(self) -> str:
        return "clustrix.cluster(func).map(items), default configuration (local executor, auto -> process pool)"


class Joblib(Contender):
    name = "joblib"

    def setup(self) -> None:
        import joblib

        self.joblib = joblib
        self.parallel = joblib.Parallel(n_jobs=WORKERS, backend="loky")

    def map(self, func: Callable[[int], int], items: list[int]) -> list[int]:
        delayed = self.joblib.delayed
        return self.parallel(delayed(func)(x) for x in items)

    def describe(self) -> str:
        return f"joblib.Parallel(n_jobs={WORKERS}, backend='loky') with batch_size='auto' (loky's reusable executor)"


class Pool(Contender):
    name = "ProcessPoolExecutor"

    def setup(self) -> None:
        self.pool = concurrent.futures.ProcessPoolExecutor(max_workers=WORKERS)

    @staticmethod
    def chunksize(n: int) -> int:
        # Four chunks per worker (as clustrix and multiprocessing.Pool.map do); 1 for few calls.
        return max(1, n // (WORKERS * 4)) if n > 100 else 1

    def map(self, func: Callable[[int], int], items: list[int]) -> list[int]:
        return list(self.pool.map(func, items, chunksize=self.chunksize(len(items))))

    def teardown(self) -> None:
        self.pool.shutdown(wait=True)

    def describe(self) -> str:
        method = multiprocessing.get_start_method()
        return (
            f"concurrent.futures.ProcessPoolExecutor(max_workers={WORKERS}) ({method} start method), "
            f"map(..., chunksize={self.chunksize(TINY_CALLS)}) for the tiny case, chunksize=1 for the CPU case"
        )


# ---- measurement ----------------------------------------------------------------------
CONTENDERS: dict[str, type[Contender]] = {c.name: c for c in (Serial, Clustrix, Joblib, Pool)}
COLD_PROCESSES = 5  # fresh interpreters per contender for the cold-process figure


def cold_child(name: str) -> None:
    """In a fresh interpreter: time the contender's import and its first call; print JSON."""
    contender = CONTENDERS[name]()
    start = time.perf_counter()
    contender.setup()
    imported = time.perf_counter()
    result = contender.map(tiny, [1])
    done = time.perf_counter()
    assert list(result) == [2]
    print(json.dumps({"import_s": imported - start, "first_call_s": done - imported, "total_s": done - start}))
    sys.stdout.flush()
    contender.teardown()


def cold_processes(names: list[str], rounds: int) -> dict[str, list[dict[str, float]]]:
    """Every contender's import + first call in ``rounds`` fresh interpreters each, in rotating order."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--cold-child", name],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return runs


def timed(contender: Contender, func: Callable[[int], int], items: list[int], expected: list[int]) -> float:
    start = time.perf_counter()
    result = contender.map(func, items)
    elapsed = time.perf_counter() - start
    if list(result) != expected:
        raise RuntimeError(f"{contender.name} returned wrong results")
    return elapsed


def summary(times: list[float]) -> dict[str, Any]:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "runs_s": times,
    }


def versions() -> dict[str, str]:
    out = {}
    for dist in ("clustrix-core", "cloudpickle", "joblib", "pluggy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    try:
        import joblib.externals.loky as loky

        out["loky (vendored in joblib)"] = loky.__version__
    except Exception:  # noqa: BLE001 - informational only
        pass
    return out


def machine() -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": affinity,
        "cpu_model": model,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="benchmarks/results/local.json", help="JSON file for all figures")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per contender and case (at least 5)")
    parser.add_argument("--cold-child", help=argparse.SUPPRESS)  # internal: one fresh-interpreter cold run
    args = parser.parse_args(argv)
    if args.cold_child:
        cold_child(args.cold_child)
        return 0
    repeats = max(5, args.repeats)

    started = datetime.datetime.now(datetime.timezone.utc)
    info = machine()
    print(
        f"clustrix local-executor benchmark  {started:%Y-%m-%d %H:%M:%S} UTC\n"
        f"python {info['python']}, {info['cpu_count']} CPUs ({info['usable_cpus']} usable), {info['cpu_model']}\n"
        + ", ".join(f"{k} {v}" for k, v in versions().items())
    )

    n_spin, spin_seconds = calibrate(CPU_CALL_SECONDS)
    print(f"calibrated spin({n_spin:,}) to {spin_seconds:.3f} s of CPU time per call in this process")

    cases = {
        "tiny": (tiny, list(range(TINY_CALLS))),
        "cpu": (spin, [n_spin] * CPU_CALLS),
    }
    expected = {
        name: [func(x) for x in items] if name == "tiny" else [spin(n_spin)] * CPU_CALLS
        for name, (func, items) in cases.items()
    }

    contenders: list[Contender] = [Serial(), Clustrix(), Joblib(), Pool()]
    print(
        f"\ncold processes: import + first call in {COLD_PROCESSES} fresh interpreters per contender "
        "(rotating order) ...",
        flush=True,
    )
    cold_runs = cold_processes([c.name for c in contenders], COLD_PROCESSES)
    cold_process = {name: statistics.median(r["total_s"] for r in runs_) for name, runs_ in cold_runs.items()}
    cold: dict[str, float] = {}
    runs: dict[str, dict[str, list[float]]] = {c.name: {case: [] for case in cases} for c in contenders}
    warmups: dict[str, dict[str, float]] = {c.name: {} for c in contenders}

    print(
        f"\nwarm-up: every contender runs each case once, untimed, before its {repeats} timed runs "
        "(pools are reused between runs);\nthe first call of each contender (worker start-up included) "
        "is reported separately as 'cold'. Timed runs are interleaved round-robin."
    )
    for contender in contenders:
        contender.setup()
        # Cold: the very first call, a single tiny call, including pool start-up.
        start = time.perf_counter()
        result = contender.map(tiny, [1])
        cold[contender.name] = time.perf_counter() - start
        assert list(result) == [2]

    loads: dict[str, dict[str, list[float]]] = {}
    try:
        for case, (func, items) in cases.items():
            load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else []
            for contender in contenders:
                start = time.perf_counter()
                timed(contender, func, items, expected[case])
                warmups[contender.name][case] = time.perf_counter() - start
            for r in range(repeats):
                order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
                for contender in order:
                    runs[contender.name][case].append(timed(contender, func, items, expected[case]))
                print(f"  {case}: run {r + 1}/{repeats} done", flush=True)
            load_after = list(os.getloadavg()) if hasattr(os, "getloadavg") else []
            loads[case] = {"before": load_before, "after": load_after}
    finally:
        for contender in contenders:
            contender.teardown()

    stats = {name: {case: summary(times) for case, times in per_case.items()} for name, per_case in runs.items()}

    # ratios and verdicts
    rows = []
    joblib_tiny = stats["joblib"]["tiny"]["median_s"]
    serial_cpu = stats["serial"]["cpu"]["median_s"]
    cpu_target = serial_cpu / stats[CPU_TARGET]["cpu"]["median_s"]
    for contender in contenders:
        name = contender.name
        s = stats[name]["tiny"]
        ratio = s["median_s"] / joblib_tiny
        s["ratio_vs_joblib"] = ratio
        verdict = None
        if name == "clustrix":
            verdict = "PASS" if ratio <= TINY_TARGET_RATIO else "MISS"
            s["target"] = f"<= {TINY_TARGET_RATIO:.1f}x joblib"
            s["verdict"] = verdict
        rows.append((name, "tiny", s, f"{ratio:.2f}x joblib", f"<= {TINY_TARGET_RATIO:.1f}x joblib", verdict))
    for contender in contenders:
        name = contender.name
        s = stats[name]["cpu"]
        speedup = serial_cpu / s["median_s"]
        s["speedup_vs_serial"] = speedup
        verdict = None
        if name == "clustrix":
            verdict = "PASS" if speedup >= cpu_target else "MISS"
            s["target"] = f">= {cpu_target:.2f}x serial ({CPU_TARGET}'s)"
            s["verdict"] = verdict
        rows.append((name, "cpu", s, f"{speedup:.2f}x faster", f">= {CPU_TARGET}'s {cpu_target:.2f}x", verdict))

    header = ("contender", "case", "median s", "min s", "max s", "ratio", "target", "result")
    table = [header]
    for name, case, s, ratio_text, target, verdict in rows:
        table.append(
            (
                name,
                case,
                f"{s['median_s']:.3f}",
                f"{s['min_s']:.3f}",
                f"{s['max_s']:.3f}",
                ratio_text,
                target if verdict else "(reference)",
                verdict or "-",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print(
        f"\nResults: median of {repeats} warm runs each (after one untimed warm-up per contender and case); "
        f"{WORKERS} workers.\n"
        f"  tiny = map over {TINY_CALLS:,} calls of x + 1; ratio = median / joblib median (lower is better)\n"
        f"  cpu  = {CPU_CALLS} calls of a pure-Python loop taking ~{spin_seconds:.2f} s of CPU each; "
        "ratio = serial median / median (higher is better)\n"
        "  targets apply to clustrix (issue 14); the other rows are for reference\n"
    )
    for i, row in enumerate(table):
        line = "  ".join(
            cell.ljust(w) if j < 2 or j >= 5 else cell.rjust(w)
            for j, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        print(line.rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("\ncold first call (one tiny call, worker start-up included; not part of the figures above):")
    for name, seconds in cold.items():
        print(f"  {name:<20} {seconds:.3f} s")
    cold_verdict = "PASS" if cold["clustrix"] <= cold["joblib"] else "MISS"
    print(f"  target: clustrix <= joblib: {cold_verdict}")
    print(
        f"\ncold process (a fresh interpreter: the contender's import, then its first call; "
        f"median of {COLD_PROCESSES}, min-max):"
    )
    for name, runs_ in cold_runs.items():
        totals = [r["total_s"] for r in runs_]
        imports = statistics.median(r["import_s"] for r in runs_)
        firsts = statistics.median(r["first_call_s"] for r in runs_)
        print(
            f"  {name:<20} {cold_process[name]:.3f} s ({min(totals):.3f}-{max(totals):.3f}; "
            f"import {imports:.3f} s + first call {firsts:.3f} s)"
        )
    cold_process_verdict = "PASS" if cold_process["clustrix"] <= cold_process["joblib"] else "MISS"
    print(f"  target: clustrix <= joblib: {cold_process_verdict}")
    # The load average just before a case (this script idle between cases, apart from the
    # tail of its own previous case) shows whether other processes were competing for the cores.
    busy = {case: v["before"][0] for case, v in loads.items() if v["before"]}
    cpus = info["usable_cpus"] or info["cpu_count"] or 1
    noisy = [case for case, load in busy.items() if load > cpus / 2]
    if noisy:
        print(
            f"\nWARNING: the machine was busy: 1-minute load average above {cpus / 2:g} (half the CPUs) "
            f"before the {', '.join(noisy)} case(s) ({', '.join(f'{c}: {busy[c]:.1f}' for c in noisy)}). "
            "Other processes were competing for the cores: the figures are noisy and the cpu case "
            "understates every contender's parallel speed-up."
        )
    misses = [f"{name} {case}" for name, case, _s, _r, _t, verdict in rows if verdict == "MISS"]
    if cold_verdict == "MISS":
        misses.append("clustrix cold")
    if cold_process_verdict == "MISS":
        misses.append("clustrix cold process")
    if misses:
        print(f"\n*** MISS: {', '.join(misses)} did not meet its target ***")
    else:
        print("\nall clustrix targets met")

    report = {
        "date": started.isoformat(),
        "machine": info,
        "versions": versions(),
        "settings": {
            "workers": WORKERS,
            "repeats": repeats,
            "tiny_calls": TINY_CALLS,
            "cpu_calls": CPU_CALLS,
            "cpu_spin_iterations": n_spin,
            "cpu_call_cpu_seconds_measured": spin_seconds,
            "warm_up": "one untimed run per contender and case before the timed runs; pools reused between runs",
            "order": "timed runs interleaved round-robin across contenders",
        },
        "contenders": {c.name: c.describe() for c in contenders},
        "targets": {
            "tiny": f"clustrix median <= {TINY_TARGET_RATIO}x joblib median",
            "cpu": f"clustrix's speed-up over serial at least {CPU_TARGET}'s in the same run",
            "cold": "clustrix's cold first call at most joblib's",
            "cold_process": "clustrix's import + first call in a fresh interpreter at most joblib's (medians)",
        },
        "results": stats,
        "warm_up_s": warmups,
        "cold_first_call_s": cold,
        "cold_process_s": {"median_total": cold_process, "runs": cold_runs},
        "load_average_1_5_15": loads,
        "noisy_cases": noisy,
        "misses": misses,
    }
    output = os.path.abspath(args.output)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as fh:
        json.dump(report, fh, indent=2)
        fh.write("\n")
    print(f"\nfigures written to {os.path.relpath(output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
