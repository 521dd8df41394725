"""SLURM in the conformance suite: the shared single-node testbed, on this machine and over SSH."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable

import pytest

from tests.conformance.target import SSH_TRANSPORTS, Target, transport_options
from tests.testbed import slurm as slurm_testbed
from tests.testbed.sshd import SSHServer
from tests.testbed.system import start_or_unavailable

SCHEDULER = "slurm"
TRANSPORTS = ("local", *SSH_TRANSPORTS)


def squeue_state(native_id: str) -> str:
    argv = ["squeue", "-h", "-t", "all", "-j", native_id, "-o", "%T"]
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def scontrol_time_limit(native_id: str) -> int:
    """``TimeLimit=2-00:00:00`` of ``scontrol show job``, in seconds."""
    text = subprocess.run(["scontrol", "show", "job", native_id], capture_output=True, text=True, check=False).stdout
    match = re.search(r"TimeLimit=(?:(\d+)-)?(\d+):(\d+):(\d+)", text)
    assert match, text
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


@pytest.fixture(scope="session")
def conformance_slurm(tmp_path_factory: pytest.TempPathFactory, conformance_sshd: SSHServer) -> Callable[[str], Target]:
    bed = start_or_unavailable("SLURM testbed", slurm_testbed.start)
    work = str(tmp_path_factory.mktemp("slurm-jobs"))

    def make(transport: str) -> Target:
        options = transport_options(transport, "slurm", work, conformance_sshd)
        return Target(
            inputs_one_by_one=True,
            scheduler="slurm",
            transport=transport,
            options={**options, "cluster_type": "slurm", "job_poll_interval": 0.2},
            enforces_memory=bed.cgroups,
            # the short partition's MaxTime is below 2 hours: SLURM would keep the job pending for ever
            impossible={"partition": bed.short_partition, "time": "02:00:00"},
            restart_controller=slurm_testbed.restart_controller,
            remote_user=None if transport == "local" else conformance_sshd.user,
            native_state=squeue_state,
            hold={"sbatch_directives": ["--begin=now+3600"]},
            queued_word="PENDING",
            time_limit=scontrol_time_limit,
            # StateSaveLocation (hash.*/job.*/script, environment) and SlurmdSpoolDir (the running job's script)
            spool_dirs=(str(slurm_testbed.SPOOL_CTLD), str(slurm_testbed.SPOOL_D)),
        )

    return make
