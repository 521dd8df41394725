"""SLURM in the conformance suite: the shared single-node testbed, on this machine and over SSH."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from tests.conformance.target import Target, local_options, ssh_options
from tests.testbed import slurm as slurm_testbed
from tests.testbed.sshd import SSHServer
from tests.testbed.system import unavailable

SCHEDULER = "slurm"
TRANSPORTS = ("local", "ssh")


def squeue_state(native_id: str) -> str:
    argv = ["squeue", "-h", "-t", "all", "-j", native_id, "-o", "%T"]
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


@pytest.fixture(scope="session")
def conformance_slurm(tmp_path_factory: pytest.TempPathFactory, conformance_sshd: SSHServer) -> Callable[[str], Target]:
    try:
        bed = slurm_testbed.start()
    except Exception as exc:
        unavailable(f"SLURM testbed: {type(exc).__name__}: {exc}")
        raise
    work = str(tmp_path_factory.mktemp("slurm-jobs"))

    def make(transport: str) -> Target:
        if transport == "local":
            options = local_options(work)
        else:
            options = ssh_options(conformance_sshd, remote_work_dir="~/.clustrix/conformance-slurm")
        return Target(
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
        )

    return make
