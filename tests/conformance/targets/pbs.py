"""OpenPBS in the conformance suite: the testbed in its network namespace, on the login node and over SSH.

"local" is this machine inside the namespace as the unprivileged job user (the test-only
plugin ``clustrix-openpbs-netns`` serves ``cluster_host="openpbs-netns"``, also to the CLI
processes the suite starts); "paramiko" and "openssh" go through an sshd inside the namespace.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from tests.conformance.target import SSH_TRANSPORTS, Target, ssh_client_options
from tests.testbed import openpbs
from tests.testbed.system import unavailable

SCHEDULER = "pbs"
TRANSPORTS = ("local", *SSH_TRANSPORTS)


@pytest.fixture(scope="session")
def conformance_pbs_ssh(conformance_pbs_bed: openpbs.OpenPBS) -> Iterator[openpbs.NetnsSSH]:
    try:
        server = openpbs.start_ssh(conformance_pbs_bed)
    except Exception as exc:
        unavailable(f"sshd in the OpenPBS namespace: {type(exc).__name__}: {exc}")
        raise
    yield server
    server.stop()


@pytest.fixture(scope="session")
def conformance_pbs_bed() -> openpbs.OpenPBS:
    try:
        return openpbs.start()
    except Exception as exc:
        unavailable(f"OpenPBS testbed: {type(exc).__name__}: {exc}")
        raise


@pytest.fixture(scope="session")
def conformance_pbs(conformance_pbs_bed: openpbs.OpenPBS, request: pytest.FixtureRequest) -> Callable[[str], Target]:
    bed = conformance_pbs_bed
    python = openpbs.job_python()  # the namespace has no network: no venv is built there

    def native_state(native_id: str) -> str:
        # PBS's own words, plus "running"/"queued" for R/Q so the suite's waits read alike for every scheduler
        text = bed.run(["qstat", "-x", "-f", native_id], as_user=False, check=False).stdout
        words = {"job_state = R": " running", "job_state = Q": " queued"}
        return text + "".join(word for state, word in words.items() if state in text)

    def walltime(native_id: str) -> int:
        """``Resource_List.walltime = 48:00:00`` of ``qstat -x -f``, in seconds."""
        text = bed.run(["qstat", "-x", "-f", native_id], as_user=False, check=False).stdout
        match = re.search(r"Resource_List\.walltime = (\d+):(\d+):(\d+)", text)
        assert match, text
        hours, minutes, seconds = (int(part) for part in match.groups())
        return (hours * 60 + minutes) * 60 + seconds

    def make(transport: str) -> Target:
        common = {"python_executable": python, "remote_work_dir": "~/.clustrix/conformance-pbs"}
        if transport == "local":
            options = {"cluster_host": openpbs.NETNS_HOST, **common}
        else:
            server: openpbs.NetnsSSH = request.getfixturevalue("conformance_pbs_ssh")
            options = server.config(**common, **ssh_client_options(transport))
            del options["cluster_type"]
        return Target(
            scheduler="pbs",
            transport=transport,
            options={**options, "cluster_type": "pbs", "job_poll_interval": 0.2},
            short_time="00:00:05",
            enforces_memory=True,  # $enforce mem in the testbed's mom config
            impossible={"cores": 64},  # qsub accepts it; the comment says "Can Never Run"
            restart_controller=lambda: openpbs.restart_server(bed),
            remote_user=bed.user,
            can_queue=False,  # 2 CPUs and one options set for every test: a second 1-core job starts
            hold={"pbs_directives": ["-h"]},  # a user hold keeps the job queued (state H) until qdel
            queued_word="job_state = H",
            native_state=native_state,
            time_limit=walltime,
            # mom (so every job) and the sshd run in mount namespaces of their own (for /etc/hosts), made
            # as slaves of this one: they see what the test mounts under the shared openpbs.MOUNTS
            mount_dir=str(openpbs.MOUNTS),
            # PBS_HOME: server_priv/jobs, mom_priv/jobs (the .SC scripts) and the PostgreSQL datastore
            spool_dirs=(str(openpbs.PBS_HOME),),
        )

    return make
