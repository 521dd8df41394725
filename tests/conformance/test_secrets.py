"""Secret values a job is given never land where a co-user, or the scheduler's spool, could read them.

``environment_variables`` are the documented place for secrets (docs/security.md). Every
scheduler copies the job script somewhere of its own (SLURM's ``StateSaveLocation``, Grid
Engine's ``execd/<host>/job_scripts`` at mode 0755, OpenPBS's ``mom_priv/jobs``), so the
values must never be in the script: they travel in the job directory's private
``variables.sh``, which the script sources.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from clustrix import Job, cluster
from clustrix.plugin.types import JobState
from clustrix.remote.environment.activation import VARIABLES_FILE
from tests.conformance.target import Target
from tests.held_calls import held, release
from tests.testbed.cousers import ProcWatch, as_mallory


def canary_when_released(release_dir: str) -> str:
    """Wait for the test's ``go``, then return the job's ``CLUSTRIX_CANARY``."""
    go = os.path.join(release_dir, "go")
    while os.path.isdir(release_dir) and not os.path.exists(go):
        time.sleep(0.05)
    return os.environ["CLUSTRIX_CANARY"]


def files_holding(text: str, roots: Iterable[str]) -> list[str]:
    """Every regular file under ``roots`` whose bytes contain ``text`` (read as root: all of them)."""
    needle, found = text.encode(), []
    for root in roots:
        for folder, _dirs, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                try:
                    if not os.path.isfile(path) or os.path.islink(path):
                        continue
                    with open(path, "rb") as fh:
                        if needle in fh.read():
                            found.append(path)
                except OSError:
                    continue  # gone meanwhile (a job that ended), or a socket
    return sorted(found)


def test_environment_variable_values_are_in_no_job_script_spool_or_process_arguments_while_the_job_runs(
    target: Target, mallory: Path
) -> None:
    """While the call runs: the value is only in the job's 0600 variables.sh, and the call still sees it."""
    if not target.spool_dirs:
        pytest.skip(f"{target.id}: no spool directories to look in")
    with held() as release_dir, ProcWatch(mallory) as watch:
        options = {**target.options, "environment_variables": {"CLUSTRIX_CANARY": watch.canary}}
        future = cluster(time="00:05:00", **options)(canary_when_released).submit(str(release_dir))
        job = Job.attach(future.job_id)
        claim = Path(job.handle.job_dir or "", "out", "0.claim")
        deadline = time.monotonic() + 120
        while not (claim.exists() and job.status().state is JobState.RUNNING):  # the call itself runs
            assert time.monotonic() < deadline, f"the job never started: {job.status()}"
            time.sleep(0.2)
        holding = files_holding(watch.canary, [*target.spool_dirs, str(job.handle.job_dir)])
        variables = os.path.join(str(job.handle.job_dir), VARIABLES_FILE)
        mallory_reads = as_mallory(f"cat {variables}")
        release(release_dir)
        value = future.result(timeout=120)
    assert value == watch.canary  # the job still sees its variable
    assert holding == [variables], f"the secret value is in: {holding}"
    assert os.stat(variables).st_mode & 0o777 == 0o600
    assert mallory_reads.returncode != 0 and watch.canary not in mallory_reads.stdout
    assert watch.scans > 1
    assert watch.seen == [], f"mallory read the secret in the arguments of: {watch.seen}"
