"""Grid Engine in the conformance suite: the single-node Son of Grid Engine testbed, here and over SSH."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable

import pytest

from clustrix.plugin.types import JobState
from clustrix_sge.parse import parse_qstat_xml
from clustrix_sge.states import to_job_state
from tests.conformance.target import SSH_TRANSPORTS, Target, transport_options
from tests.testbed import sge as sge_testbed
from tests.testbed.sshd import SSHServer
from tests.testbed.system import start_or_unavailable

SCHEDULER = "sge"
TRANSPORTS = ("local", *SSH_TRANSPORTS)


def qstat_state(native_id: str) -> str:
    """``running r``, ``pending hqw``, ...: the job's state as everyone's ``qstat -xml`` shows it ("" once gone)."""
    proc = subprocess.run(
        ["qstat", "-xml", "-u", "*"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **sge_testbed.ENV},
    )
    words = []
    for job in parse_qstat_xml(proc.stdout):
        if job.job_id == native_id:
            state = to_job_state(job.state)
            word = {JobState.RUNNING: "running", JobState.PENDING: "pending"}.get(state, state.value.lower())
            words.append(f"{word} {job.state}")
    return "\n".join(words)


def qstat_h_rt(native_id: str) -> int:
    """``h_rt=172800`` of the hard resource list ``qstat -j`` shows, in seconds."""
    env = {**os.environ, **sge_testbed.ENV}
    text = subprocess.run(["qstat", "-j", native_id], capture_output=True, text=True, check=False, env=env).stdout
    match = re.search(r"hard resource_list:.*\bh_rt=(\d+)", text)
    assert match, text
    return int(match.group(1))


@pytest.fixture(scope="session")
def conformance_sge(tmp_path_factory: pytest.TempPathFactory, conformance_sshd: SSHServer) -> Callable[[str], Target]:
    start_or_unavailable("SGE testbed", sge_testbed.start)
    work = tmp_path_factory.mktemp("sge-jobs")
    work.chmod(0o700)

    def make(transport: str) -> Target:
        options = transport_options(transport, "sge", str(work), conformance_sshd)
        return Target(
            inputs_one_by_one=True,
            scheduler="sge",
            transport=transport,
            options={**options, "cluster_type": "sge", "job_poll_interval": 0.2},
            # h_rt counts seconds; with -notify the kill comes the queue's notify time (5 s) later
            short_time="00:00:05",
            # h_vmem is each process's address-space limit: one process over it gets the call's own
            # MemoryError back, not a kill. tests/sge proves both outcomes (MemoryError, and
            # JobOutOfMemoryError when the execd kills a job whose processes together pass h_vmem).
            enforces_memory=False,
            # short.q allows at most 5 minutes: qsub -w e refuses the job at submit with SGE's words
            impossible={"queue": sge_testbed.SHORT_QUEUE, "time": "01:00:00"},
            restart_controller=sge_testbed.restart_qmaster,
            remote_user=None if transport == "local" else conformance_sshd.user,
            native_state=qstat_state,
            hold={"sge_directives": ["-h"]},  # a user hold: hqw until qrls
            queued_word="pending",
            time_limit=qstat_h_rt,
            # the qmaster's spool (the berkeleydb) and every execd's (execd/<host>/job_scripts, active_jobs)
            spool_dirs=(str(sge_testbed.QMASTER_SPOOL.parent),),
        )

    return make
