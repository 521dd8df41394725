"""Benchmark clustrix-sge against raw qsub on the real Grid Engine testbed.

Run with ``nox -s bench`` (or ``python benchmarks/bench_sge.py --output FILE`` as root in a
venv with clustrix-core, clustrix-sge and clustrix-ssh). It starts the Grid Engine and sshd
testbeds of ``tests/testbed`` (or reuses a healthy cell).

Cases (issue 10), every contender in one run, runs interleaved round-robin:

(a) ``single``: one trivial call's round trip (submit, run, result back), on the submit host
    and over SSH to the 127.0.0.1 sshd as the unprivileged ``clustrix-test``, against a raw
    ``qsub -sync y -b y true``. Target: clustrix at most 1.0x raw + 0.5 s.
(b) ``map100``: ``.map`` over 100 trivial calls against a raw ``qsub -sync y -t 1-100 -b y true``.
    Target: clustrix at most 1.5x raw.
(c) ``operations``: remote commands and SFTP requests of each operation (the first submit
    of a process, a later submit, each poll round, the fetch) for one call and for a map of
    100, driven through the scheduler hooks and counted by the SSH transport itself (and by a
    counting local transport on the submit host). The submit command is the one ``qsub``,
    a poll round's command runs the one ``qstat -xml``. Targets: a submit is at most 2
    commands (1 once the environment was checked), a poll round 1, a fetch at most 1, and no
    SFTP request.

Each timed run starts when the cell is idle (no job in ``qstat``), and the order of the
contenders rotates from run to run. clustrix uses its default polling. Figures are medians
of ``--repeats`` runs (at least 5) with min and max. A benchmark reports and never asserts:
the exit code is 0 even when a target is missed; the table says MISS.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.testbed brings the cell and sshd up

import harness  # noqa: E402  (benchmarks/, the script's own folder)
from harness import (  # noqa: E402
    Contender,
    arguments,
    clustrix_pair,
    operations_met,
    print_figures,
    print_operations,
    write_report,
)

SINGLE_TARGET = (1.0, 0.5)  # clustrix <= 1.0 x raw qsub -sync y + 0.5 s
MAP_TARGET = 1.5  # clustrix map <= 1.5 x raw qsub -t 1-100 -sync y
MAP_SIZE = 100


def trivial(x: int) -> int:
    return x + 1


def sge_env() -> dict[str, str]:
    from tests.testbed import sge as sge_testbed

    return {**os.environ, **sge_testbed.ENV}


# ---- contenders -------------------------------------------------------------------------
class RawQsub(Contender):
    name = "raw qsub -sync y"
    description = (
        "qsub -sync y -b y true (single) and qsub -sync y -t 1-100 -b y true (map100), "
        "output to /dev/null; qsub returns when every task has ended"
    )

    def __init__(self, work: str) -> None:
        self.work = work

    def _qsub(self, *args: str) -> None:
        subprocess.run(
            ["qsub", "-sync", "y", "-N", "raw", "-o", "/dev/null", "-e", "/dev/null", *args, "-b", "y", "true"],
            capture_output=True,
            check=True,
            cwd=self.work,
            env=sge_env(),
        )

    def single(self) -> int:
        self._qsub()
        return 2

    def map(self) -> list[int]:
        self._qsub("-t", f"1-{MAP_SIZE}")
        return [trivial(x) for x in range(MAP_SIZE)]


# ---- running ----------------------------------------------------------------------------
def wait_until_idle(timeout: float = 120) -> None:
    """Every timed run starts on a quiet cell: no job of anyone in qstat."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["qstat", "-u", "*"], capture_output=True, text=True, check=False, env=sge_env()).stdout
        if not out.strip():
            return
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    from clustrix.batch.engine import BatchScheduler
    from clustrix_sge import SGEDialect

    output, repeats = arguments(__doc__ or "", "benchmarks/results/sge.json", argv)

    from tests.testbed import sge as sge_testbed
    from tests.testbed.sshd import start_sshd

    bed = sge_testbed.start()
    server = start_sshd(sge_testbed.TEST_USER)
    work = tempfile.mkdtemp(prefix="clustrix-bench-sge-")
    os.chmod(work, 0o700)
    os.environ.setdefault("CLUSTRIX_DATA_DIR", os.path.join(work, "registry"))
    try:
        over_ssh, on_host = clustrix_pair("sge", server, work, trivial, MAP_SIZE, host="submit host")
        raw = RawQsub(work)

        print(f"SGE testbed {'reused' if bed.reused else 'started'}; sshd on {server.host}:{server.port}")
        contenders: list[Contender] = [over_ssh, on_host, raw]
        counted = (over_ssh, on_host)
        figures, med, counts = harness.measure(
            functools.partial(BatchScheduler, SGEDialect()),
            contenders,
            contenders,
            counted,
            trivial,
            MAP_SIZE,
            repeats,
            wait_until_idle,
        )
    finally:
        server.cleanup()

    factor, offset = SINGLE_TARGET
    targets = []
    for ours in (over_ssh.name, on_host.name):
        allowed = factor * med["single"][raw.name] + offset
        targets.append(
            (f"single: {ours} vs {factor}x raw + {offset} s", med["single"][ours], allowed, f"<= {allowed:.2f} s")
        )
        allowed = MAP_TARGET * med["map100"][raw.name]
        targets.append((f"map100: {ours} vs {MAP_TARGET}x raw", med["map100"][ours], allowed, f"<= {allowed:.2f} s"))
    command_checks = [(entry, operations_met(entry)) for entry in counts]

    print_figures(f"SGE benchmark: medians of {repeats} runs (min-max), seconds", figures)
    print("\ntargets:")
    misses = []
    for label, value, allowed, words in targets:
        verdict = "met" if value <= allowed else "MISS"
        if verdict == "MISS":
            misses.append(label)
        print(f"  {label:<48} {value:6.2f} s ({words})  {verdict}")
    print_operations(command_checks, misses)
    print(f"\n*** MISS: {'; '.join(misses)} ***" if misses else "\nall clustrix-sge targets met")

    report = {
        "testbed": {"slots": bed.slots, "schedule_interval_s": 1},
        "repeats": repeats,
        "contenders": {c.name: c.description for c in contenders},
        "figures": figures,
        "targets": [
            {"what": label, "seconds": round(value, 3), "allowed": round(allowed, 3), "met": value <= allowed}
            for label, value, allowed, _ in targets
        ],
        "operations": [{**entry, "met": ok} for entry, ok in command_checks],
        "missed": misses,
    }
    write_report(output, "sge", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
