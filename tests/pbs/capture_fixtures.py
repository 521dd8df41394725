"""Capture real PBS output into ``tests/pbs/fixtures`` (run by hand against the testbeds).

``python -m tests.pbs.capture_fixtures`` submits jobs that end in every way the parsers
must read, on OpenPBS (as the job user, inside the namespace) and through the
Torque-style CLI of slurm-wlm-torque, then saves what ``qsub``, ``qstat`` and ``qdel``
printed, with the argv the plugin itself uses.
"""

from __future__ import annotations

import time
from pathlib import Path

from clustrix.plugin.transport import CommandResult, Transport
from clustrix_pbs.dialect import PBSProDialect, TorqueDialect
from tests.testbed import openpbs, torque

FIXTURES = Path(__file__).parent / "fixtures"


def save(name: str, result: CommandResult) -> str:
    (FIXTURES / f"{name}.stdout").write_text(result.stdout)
    if result.stderr or result.returncode:
        (FIXTURES / f"{name}.stderr").write_text(result.stderr + f"(exit {result.returncode})\n")
    return result.stdout


def qsub(transport: Transport, work: str, *args: str) -> str:
    return transport.run(["qsub", "-o", f"{work}/o", "-e", f"{work}/e", *args], check=True).stdout.strip()


def wait_state(transport: Transport, argv: list[str], word: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and word not in transport.run(argv).stdout:
        time.sleep(0.5)


def capture_openpbs() -> None:
    bed = openpbs.start()
    t = bed.transport()
    work = "~/capture"
    t.makedirs(work)
    home = t.expand(work)
    dialect = PBSProDialect()
    save("openpbs_qstat_version", t.run(["qstat", "--version"]))
    save("openpbs_qstat_Bf", t.run(dialect.site_argv() or []))
    ids = {
        "ok": qsub(t, home, "--", "/bin/true"),
        "exit3": qsub(t, home, "--", "/bin/sh", "-c", "exit 3"),
        "walltime": qsub(t, home, "-l", "walltime=00:00:02", "--", "/bin/sleep", "120"),
        "never": qsub(t, home, "-l", "select=1:ncpus=64", "--", "/bin/true"),
        "running": qsub(t, home, "-q", "short", "--", "/bin/sleep", "60"),
        "array": qsub(t, home, "-J", "1-4", "--", "/bin/sleep", "2"),
    }
    (FIXTURES / "openpbs_qsub_ids.txt").write_text("".join(f"{k} {v}\n" for k, v in ids.items()))
    wait_state(t, ["qstat", "-f", ids["running"]], "job_state = R")
    save("openpbs_qrerun_as_user", t.run(["qrerun", ids["running"]]))
    time.sleep(12)  # the scheduler's comment on the impossible job, the walltime kill
    save("openpbs_status_mixed", t.run(dialect.status_argv(list(ids.values()))))
    t.run(["qdel", ids["running"], ids["never"]])
    wait_state(t, ["qstat", "-x", "-f", ids["walltime"]], "Exit_status = -29")
    wait_state(t, ["qstat", "-x", "-f", ids["running"]], "job_state = F")
    time.sleep(5)
    save("openpbs_status_final", t.run(dialect.status_argv(list(ids.values()))))
    save("openpbs_qstat_json_array", t.run(["qstat", "-x", "-f", "-F", "json", "-t", ids["array"]]))
    save("openpbs_qstat_json_two_jobs", t.run(["qstat", "-x", "-f", "-F", "json", ids["ok"], ids["exit3"]]))
    save("openpbs_status_unknown_and_known", t.run(dialect.status_argv([ids["ok"], f"99999.{bed.host}"])))
    save("openpbs_qdel_finished", t.run(["qdel", ids["ok"]]))
    save("openpbs_qsub_unknown_queue", t.run(["qsub", "-q", "nosuchqueue", "--", "/bin/true"]))
    save("openpbs_qsub_one_element_array", t.run(["qsub", "-J", "1-1", "--", "/bin/true"]))


def capture_torque() -> None:
    cli = torque.start()
    t = cli.transport()
    work = Path("/tmp/clustrix-torque-capture")
    work.mkdir(exist_ok=True)
    dialect = TorqueDialect()
    save("torque_cli_qstat_version", t.run(["qstat", "--version"]))
    script = work / "job.pbs"
    script.write_text("#!/bin/bash\n#PBS -l nodes=1:ppn=1\nsleep 3\nexit ${EXIT:-0}\n")
    ok = qsub(t, str(work), str(script))
    array = qsub(t, str(work), "-t", "1-3", str(script))
    (FIXTURES / "torque_cli_qsub_ids.txt").write_text(f"ok {ok}\narray {array}\n")
    time.sleep(1)
    save("torque_cli_status_running", t.run(dialect.status_argv([ok, array])))
    time.sleep(8)
    save("torque_cli_status_final", t.run(dialect.status_argv([ok, array])))
    save("torque_cli_status_unknown", t.run(dialect.status_argv(["999999"])))


def main() -> None:
    FIXTURES.mkdir(exist_ok=True)
    capture_openpbs()
    capture_torque()


if __name__ == "__main__":
    main()
