"""Capture real SLURM output into ``tests/slurm/fixtures`` (run by hand against the testbed).

``python -m tests.slurm.capture_fixtures`` submits a handful of jobs that end in
every state the parsers must read, then saves what ``sbatch``, ``squeue``, ``sacct``
and ``scontrol`` printed, with the argv clustrix_slurm itself uses.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from clustrix_slurm import parse
from tests.testbed import slurm as testbed

FIXTURES = Path(__file__).parent / "fixtures"


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def sbatch(*args: str) -> str:
    proc = run(["sbatch", "--parsable", *args])
    return proc.stdout.strip()


def main() -> None:
    testbed.start()
    work = Path(tempfile.mkdtemp(prefix="clustrix-capture-"))
    out = f"--output={work}/%A_%a.out"
    ids = {
        "completed": sbatch(out, "--wrap=true"),
        "failed": sbatch(out, "--wrap=exit 3"),
        "timeout": sbatch(out, "--time=00:01:00", "--wrap=sleep 300"),
        "oom": sbatch(out, "--mem=100M", "--wrap=python3 -c 'a = bytearray(400 * 2**20); import time; time.sleep(2)'"),
        "cancelled": sbatch(out, "--wrap=sleep 300"),
        "array": sbatch(out, "--array=0-19%2", "--wrap=sleep 2"),
        "never": sbatch(out, "--partition=short", "--time=01:00:00", "--wrap=true"),
    }
    (FIXTURES / "sbatch_parsable.txt").write_text(ids["completed"] + "\n")
    time.sleep(3)
    running = run(parse.squeue_argv(ids.values())).stdout
    (FIXTURES / "squeue_running.txt").write_text(running)
    run(["scancel", ids["cancelled"], ids["never"]])
    time.sleep(75)  # past the one-minute time limit
    (FIXTURES / "squeue_final.txt").write_text(run(parse.squeue_argv(ids.values())).stdout)
    (FIXTURES / "sacct_final.txt").write_text(run(parse.sacct_argv(ids.values())).stdout)
    (FIXTURES / "scontrol_show_config.txt").write_text(run(["scontrol", "show", "config"]).stdout)
    rejected = run(["sbatch", "--parsable", "--mem=99999999M", "--wrap=true"])
    (FIXTURES / "sbatch_rejected_stderr.txt").write_text(rejected.stderr)
    (FIXTURES / "jobs.txt").write_text("".join(f"{k}={v}\n" for k, v in ids.items()))


if __name__ == "__main__":
    main()
