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

import functools
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.testbed brings the cluster and sshd up

import harness  # noqa: E402  (benchmarks/, the script's own folder)
from harness import Contender, operations_met, print_figures, print_operations  # noqa: E402

SINGLE_TARGET = 1.0  # clustrix over SSH / submitit, at most
MAP_VS_SUBMITIT_TARGET = 0.5  # clustrix map / submitit map_array, at most
MAP_VS_RAW_TARGET = 1.5  # clustrix map / raw sbatch --array, at most
MAP_SIZE = 100


def trivial(x: int) -> int:
    return x + 1


# ---- contenders -------------------------------------------------------------------------
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


def main(argv: list[str] | None = None) -> int:
    from clustrix.batch.engine import BatchScheduler
    from clustrix_slurm import SlurmDialect

    output, repeats = harness.arguments(__doc__ or "", "benchmarks/results/slurm.json", argv)

    from tests.testbed import slurm as slurm_testbed
    from tests.testbed.sshd import start_sshd

    bed = slurm_testbed.start()
    server = start_sshd(slurm_testbed.TEST_USER)
    work = tempfile.mkdtemp(prefix="clustrix-bench-slurm-")
    os.environ.setdefault("CLUSTRIX_DATA_DIR", os.path.join(work, "registry"))
    try:
        over_ssh, on_login = harness.clustrix_pair("slurm", server, work, trivial, MAP_SIZE)
        submitit = Submitit(os.path.join(work, "submitit"))
        raw = RawSbatch()

        print(f"SLURM testbed {'reused' if bed.reused else 'started'}; sshd on {server.host}:{server.port}")
        singles: list[Contender] = [over_ssh, on_login, submitit]
        maps: list[Contender] = [over_ssh, on_login, submitit, raw]
        counted = (over_ssh, on_login)
        figures, med, counts = harness.measure(
            functools.partial(BatchScheduler, SlurmDialect()),
            singles,
            maps,
            counted,
            trivial,
            MAP_SIZE,
            repeats,
            wait_until_idle,
        )
    finally:
        server.cleanup()

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
    command_checks = [(entry, operations_met(entry)) for entry in counts]

    print_figures(f"SLURM benchmark: medians of {repeats} runs (min-max), seconds", figures)
    print("\ntargets:")
    misses = []
    for label, ratio, target in targets:
        verdict = "met" if ratio <= target else "MISS"
        if verdict == "MISS":
            misses.append(label)
        print(f"  {label:<50} {ratio:5.2f}x (target <= {target}x)  {verdict}")
    print_operations(command_checks, misses)
    if misses:
        print(f"\n*** MISS: {'; '.join(misses)} ***")
    else:
        print("\nall clustrix-slurm targets met")

    report = {
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
    harness.write_report(output, "slurm", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
