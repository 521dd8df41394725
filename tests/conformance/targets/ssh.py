"""The plain ``ssh`` backend in the conformance suite: jobs run detached on the host itself.

Through the sshd testbed (the paramiko and the OpenSSH transports) and on this machine (the local transport:
``cluster_type="ssh"`` without a ``cluster_host``). There is no queue and no spool; the
"controller" of the ssh transport is sshd itself, restarted while a job runs.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from tests.conformance.target import SSH_TRANSPORTS, Target, transport_options
from tests.testbed.sshd import SSHServer

SCHEDULER = "ssh"
TRANSPORTS = ("local", *SSH_TRANSPORTS)


def group_state(native_id: str) -> str:
    """``running`` while a live process of the job's group (``PGID:JOBID``) runs something of the job, else ``gone``."""
    pgid, _, job_id = native_id.partition(":")
    listed = subprocess.run(["ps", "-ww", "-e", "-o", "pgid=,stat=,args="], capture_output=True, text=True).stdout
    for line in listed.splitlines():
        words = line.split(None, 2)
        if len(words) == 3 and words[0] == pgid and not words[1].startswith("Z") and job_id in words[2]:
            return "running"
    return "gone"


@pytest.fixture(scope="session")
def conformance_ssh(tmp_path_factory: pytest.TempPathFactory, conformance_sshd: SSHServer) -> Callable[[str], Target]:
    import clustrix_ssh  # noqa: F401 - the plugin under test must be installed

    work = str(tmp_path_factory.mktemp("ssh-jobs"))

    def make(transport: str) -> Target:
        options = transport_options(transport, "ssh", work, conformance_sshd)
        over_ssh = transport != "local"
        return Target(
            inputs_one_by_one=True,
            scheduler="ssh",
            transport=transport,
            options={**options, "cluster_type": "ssh", "job_poll_interval": 0.2},
            short_time="00:00:03",  # coreutils timeout around each task
            restart_controller=conformance_sshd.restart if over_ssh else None,
            remote_user=conformance_sshd.user if over_ssh else None,
            native_state=group_state,  # the host is this machine either way
        )

    return make
