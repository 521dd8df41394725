"""Capture real Grid Engine output into ``tests/sge/fixtures`` (run by hand against the testbed).

``python -m tests.sge.capture_fixtures`` submits jobs that end in every state the
parsers must read (running, held, a pending array range, suspended, ``Eqw``; done,
failed, over ``h_rt``, over ``h_vmem``, deleted, an array) and saves what ``qsub``,
``qstat``, ``qacct`` and ``qconf`` printed, with the argv clustrix_sge itself uses.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from clustrix_sge import parse
from tests.testbed import sge as testbed

FIXTURES = Path(__file__).parent / "fixtures"
ENV = {**os.environ, **testbed.ENV}

#: Two processes of 150 MB each under a 200 MB h_vmem: each stays below its own rlimit,
#: so only the execd's sum over the job sees the overrun and kills it.
TWO_PROCESSES = """#!/bin/bash
for i in 1 2; do python3 -c 'import time; a = bytearray(150 * 2**20); time.sleep(30)' & done
wait
"""


def run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, env=ENV, cwd=cwd)


def main() -> None:
    testbed.start()
    work = Path(tempfile.mkdtemp(prefix="clustrix-capture-"))
    (work / "two.sh").write_text(TWO_PROCESSES)

    def qsub(*args: str) -> str:
        proc = run(["qsub", "-terse", "-w", "e", "-o", str(work), "-e", str(work), *args], cwd=work)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        return proc.stdout

    def job(*args: str) -> str:
        return parse.parse_qsub_terse(qsub(*args))

    (FIXTURES / "qsub_terse.txt").write_text(qsub("-N", "completed", "-b", "y", "true"))
    ids = {"completed": parse.parse_qsub_terse((FIXTURES / "qsub_terse.txt").read_text())}
    array_text = qsub("-N", "array", "-t", "1-6", "-tc", "2", "-b", "y", "sleep 6")
    (FIXTURES / "qsub_terse_array.txt").write_text(array_text)
    ids["array"] = parse.parse_qsub_terse(array_text)
    ids["failed"] = job("-N", "failed", "-b", "y", "exit 3")
    ids["timeout"] = job("-N", "timeout", "-l", "h_rt=0:0:3", "-b", "y", "sleep 60")
    ids["oom"] = job("-N", "oom", "-l", "h_vmem=200M", str(work / "two.sh"))
    ids["memoryerror"] = job("-N", "memoryerror", "-l", "h_vmem=100M", "-b", "y", "python3 -c 'bytearray(400 * 2**20)'")
    ids["cancelled"] = job("-N", "cancelled", "-b", "y", "sleep 60")
    ids["suspended"] = job("-N", "suspended", "-b", "y", "sleep 60")
    ids["held"] = job("-N", "held", "-h", "-b", "y", "true")
    ids["held_array"] = job("-N", "held_array", "-h", "-t", "1-5", "-b", "y", "true")
    ids["error"] = job("-N", "error", "-wd", "/nonexistent/clustrix", "-b", "y", "true")
    ids["pe"] = job(
        "-N",
        "pe",
        "-pe",
        testbed.PE,
        "2",
        "-q",
        testbed.SHORT_QUEUE,
        "-P",
        testbed.PROJECT,
        "-A",
        "acct42",
        "-b",
        "y",
        "true",
    )
    time.sleep(3)
    run(["qmod", "-sj", ids["suspended"]])
    time.sleep(2)
    (FIXTURES / "qstat_xml.txt").write_text(run(["qstat", "-xml"]).stdout)
    # the dialect's status command: qstat -xml, then qstat -j of the listed jobs in an error state
    (FIXTURES / "status_command.txt").write_text(run(parse.status_argv(list(ids.values()))).stdout)
    (FIXTURES / "qstat_j_error.txt").write_text(run(["qstat", "-j", ids["error"]]).stdout)
    gone = run(["qstat", "-j", "999999"])
    (FIXTURES / "qstat_j_unknown_stderr.txt").write_text(gone.stderr + gone.stdout)
    run(["qdel", ids["cancelled"], ids["suspended"], ids["held"], ids["held_array"], ids["error"]])
    time.sleep(25)  # past h_rt and every short job (the array runs two tasks at a time)
    for name in ("completed", "array", "failed", "timeout", "oom", "memoryerror", "cancelled", "pe"):
        (FIXTURES / f"qacct_{name}.txt").write_text(run(["qacct", "-j", ids[name]]).stdout)
    # the dialect's history command: qacct -j of each listed job, an unknown one skipped
    history = run(parse.history_argv([ids["timeout"], ids["oom"], ids["cancelled"], ids["array"], "999999"]))
    (FIXTURES / "history_command.txt").write_text(history.stdout)
    unknown = run(["qacct", "-j", "999999"])
    (FIXTURES / "qacct_unknown_stderr.txt").write_text(unknown.stderr + unknown.stdout)
    (FIXTURES / "qconf_sconf.txt").write_text(run(parse.qconf_sconf_argv()).stdout)
    for name, args in {
        "no_suitable_queue": ("-q", testbed.SHORT_QUEUE, "-l", "h_rt=01:00:00"),
        "unknown_pe": ("-pe", "no-such-pe", "2"),
    }.items():
        proc = run(["qsub", "-terse", "-w", "e", "-N", "rejected", *args, "-b", "y", "true"], cwd=work)
        (FIXTURES / f"qsub_rejected_{name}_stderr.txt").write_text(proc.stderr)
    (FIXTURES / "jobs.txt").write_text("".join(f"{k}={v}\n" for k, v in ids.items()))


if __name__ == "__main__":
    main()
