"""The ssh backend keeps ``environment_variables`` values out of its driver script and every argv.

The values travel in the job directory's private ``variables.sh`` (0600), staged by the
same remote command as the driver and sourced by it; the driver holds only the names' file.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from clustrix import Job, cluster, reset_config
from clustrix.remote.environment.activation import VARIABLES_FILE
from clustrix.remote.environment.prepare import forget_prepared
from tests.held_calls import held, release
from tests.testbed.cousers import ProcWatch, as_mallory
from tests.testbed.sshd import SSHServer

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.testbed_ssh


def canary_when_released(release_dir: str) -> str:
    """Wait for the test's ``go``, then return the job's ``CLUSTRIX_CANARY``."""
    go = os.path.join(release_dir, "go")
    while os.path.isdir(release_dir) and not os.path.exists(go):
        time.sleep(0.05)
    return os.environ["CLUSTRIX_CANARY"]


def test_a_running_ssh_job_has_its_secret_only_in_its_private_variables_file(
    ssh_config: dict[str, Any], sshd: SSHServer, mallory: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    """While the call runs the driver and payload hold no value; mallory reads it neither there nor in argv."""
    monkeypatch.setenv("CLUSTRIX_DATA_DIR", str(tmp_path / "registry"))
    reset_config()
    forget_prepared()
    with held() as release_dir, ProcWatch(mallory) as watch:
        options = {**ssh_config, "environment_variables": {"CLUSTRIX_CANARY": watch.canary}}
        future = cluster(**options)(canary_when_released).submit(str(release_dir))
        job_dir = Path(Job.attach(future.job_id).handle.job_dir or "")
        deadline = time.monotonic() + 120
        while not (job_dir / "out" / "0.claim").exists():
            assert time.monotonic() < deadline, "the call never started"
            time.sleep(0.1)
        holding = sorted(p.name for p in job_dir.rglob("*") if p.is_file() and watch.canary.encode() in p.read_bytes())
        variables = job_dir / VARIABLES_FILE
        mallory_reads = as_mallory(f"cat {variables}")
        release(release_dir)
        value = future.result(timeout=120)
    reset_config()
    assert value == watch.canary  # the job still sees its variable
    assert holding == [VARIABLES_FILE], f"the secret value is in: {holding}"
    assert variables.stat().st_mode & 0o777 == 0o600
    assert mallory_reads.returncode != 0 and watch.canary not in mallory_reads.stdout
    assert watch.seen == [], f"mallory read the secret in the arguments of: {watch.seen}"
