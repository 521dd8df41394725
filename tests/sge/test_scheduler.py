"""clustrix on the real Grid Engine testbed: slots, memory, queues, projects, arrays, error states, failures."""

from __future__ import annotations

import collections
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from clustrix import JobError, JobOutOfMemoryError, cluster, configure, registry
from clustrix.batch.engine import BatchScheduler
from clustrix.errors import SubmitRejectedError
from clustrix.plugin.transport import LocalTransport
from clustrix_sge import SGEDialect
from tests.testbed import sge as sge_testbed

pytestmark = pytest.mark.testbed_sge

ENV = {**os.environ, **sge_testbed.ENV}


def sge(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, env=ENV, check=False)


def qacct(native_id: str) -> dict[str, str]:
    """The first accounting record of a job, as key -> value (waits for the record to be written)."""
    deadline = time.monotonic() + 30
    while True:
        proc = sge("qacct", "-j", native_id)
        if proc.returncode == 0:
            return {k: v.strip() for k, _, v in (line.partition(" ") for line in proc.stdout.splitlines()) if k}
        assert time.monotonic() < deadline, proc.stderr
        time.sleep(0.2)


@pytest.fixture
def local(sge_cell, tmp_path) -> dict[str, Any]:
    work = tmp_path / "jobs"
    work.mkdir(mode=0o700)
    options = {
        "cluster_type": "sge",
        "remote_work_dir": str(work),
        "python_executable": sys.executable,
        "job_poll_interval": 0.2,
    }
    configure(**options)
    return options


def job_facts() -> dict[str, Any]:
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    return {
        "slots": os.environ.get("NSLOTS"),
        "queue": os.environ.get("QUEUE"),
        "job": os.environ.get("JOB_ID"),
        "task": os.environ.get("SGE_TASK_ID"),
        "vmem_limit": limit,
        "cwd": os.getcwd(),
    }


def square(x: int) -> tuple[int, str | None, str | None]:
    return x * x, os.environ.get("JOB_ID"), os.environ.get("SGE_TASK_ID")


def test_a_call_gets_its_slots_and_per_slot_h_vmem_and_a_map_is_one_array(local):
    facts = cluster(cores=2, memory="600MB", time="00:05:00")(job_facts)()
    assert facts["slots"] == "2"
    assert facts["queue"] == sge_testbed.QUEUE
    assert facts["task"] == "1"  # even one call is an array task: SGE_TASK_ID is never "undefined"
    # the job's total memory split over its slots as h_vmem (rounded up to MiB); SGE limits h_vmem x slots
    assert facts["vmem_limit"] == 2 * 287 * 2**20
    assert os.path.basename(facts["cwd"]).startswith("20")  # -wd: the job directory

    results = cluster(time="00:05:00")(square).map(range(20))
    assert [value for value, _, _ in results] == [x * x for x in range(20)]
    assert len({job for _, job, _ in results}) == 1  # one qsub: one array job
    assert {int(task) for _, _, task in results} <= set(range(1, 21))


def test_queue_selection_project_and_account_reach_grid_engine(local):
    facts = cluster(queue=sge_testbed.SHORT_QUEUE, project=sge_testbed.PROJECT, account="lab-42")(job_facts)()
    assert facts["queue"] == sge_testbed.SHORT_QUEUE
    record = qacct(facts["job"])
    assert (record["qname"], record["project"], record["account"]) == ("short.q", "clustrix", "lab-42")
    # without a queue, jobs land in all.q (short.q sorts after it)
    assert cluster()(job_facts)()["queue"] == sge_testbed.QUEUE


def test_an_unknown_parallel_environment_is_refused_at_submit_with_grid_engines_words(local):
    """qsub -w e: nothing is queued (a time beyond the queue's h_rt is the conformance suite's case)."""
    unknown_pe = cluster(cores=2, pe="no-such-pe")(square)
    with pytest.raises(SubmitRejectedError, match='parallel environment "no-such-pe" does not exist') as info:
        unknown_pe.submit(1)
    assert isinstance(info.value, ValueError)
    # the refused job leaves no job directory behind (only the shared code cache may stay)
    assert [p.name for p in Path(local["remote_work_dir"]).iterdir() if p.name != "code"] == []
    assert registry.list_jobs() == []


def test_a_job_in_error_state_fails_with_the_reason_and_is_deleted(local):
    stuck = cluster(sge_directives=["-wd /nonexistent/clustrix-eqw"])(square)
    future = stuck.submit(1)
    with pytest.raises(JobError, match="can't chdir to /nonexistent/clustrix-eqw") as info:
        future.result(timeout=60)
    assert "SGE will never start this job: Eqw" in str(info.value)
    native_id = future.handle.native_id
    deadline = time.monotonic() + 30
    while sge("qstat", "-j", native_id).returncode == 0:  # qdel'd: it leaves the queue
        assert time.monotonic() < deadline, f"job {native_id} is still queued"
        time.sleep(0.2)


def two_processes_of(megabytes: int) -> int:
    """Each process stays below its own rlimit; together they pass h_vmem, which only the execd sees."""
    code = f"import time; block = bytearray({megabytes} * 2**20); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code])
    block = bytearray(megabytes * 2**20)
    time.sleep(30)
    child.wait()
    return len(block)


def test_h_vmem_overrun_killed_by_the_execd_is_out_of_memory(local):
    with pytest.raises(JobOutOfMemoryError, match="killed over its h_vmem limit"):
        cluster(memory="300MB", time="00:02:00")(two_processes_of)(150)


def allocate(megabytes: int) -> int:
    return len(bytearray(megabytes * 2**20))


def test_one_process_over_h_vmem_gets_memoryerror_from_its_rlimit(local):
    """h_vmem is also the process's address-space rlimit: the allocation fails inside the call."""
    with pytest.raises(MemoryError) as info:
        cluster(memory="200MB")(allocate)(1024)
    assert not isinstance(info.value, JobError)  # the call's own exception, with its traceback


class CountingTransport(LocalTransport):
    """The real local transport, recording each command it runs (every engine operation is one)."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def execute(self, argv: Sequence[str], **kwargs: Any) -> tuple[int, bytes, bytes]:  # run() and run_bytes()
        # the script travels on stdin behind a constant bootstrap argv: record both
        stdin = kwargs.get("input") or b""
        self.commands.append(" ".join(argv) + "\n" + bytes(stdin).decode(errors="replace"))
        return super().execute(argv, **kwargs)


def test_a_map_of_100_calls_is_one_qsub_and_one_qstat_per_poll_round(local, fresh_plugins):
    from clustrix.config.resources import Resources
    from clustrix.config.settings import resolve_config
    from clustrix.plugin.types import JobSpec

    transport = CountingTransport()
    scheduler = BatchScheduler(SGEDialect(), transport_factory=lambda _config: transport)
    config = resolve_config()
    spec = JobSpec(
        name="square", func=square, arguments=[((i,), {}) for i in range(100)], resources=Resources(), config=config
    )
    handle = scheduler.clustrix_submit(spec=spec, wake=lambda: None)
    # the one-time check that Grid Engine's commands are there (command -v) aside
    commands = [c for c in transport.commands if "command -v" not in c]
    assert len(commands) == len(transport.commands) - 1
    submits = [c for c in commands if "qsub" in c]
    assert len(submits) == 1 and handle.data["tasks"] == 100
    rounds = 0
    deadline = time.monotonic() + 120
    while not scheduler.clustrix_poll(handles=[handle], config=config)[handle.job_id].state.final:
        rounds += 1
        assert time.monotonic() < deadline
        time.sleep(0.3)
    counts = collections.Counter(
        word
        for c in transport.commands
        if "command -v" not in c
        for word in ("qsub", "qstat -xml", "qacct", "qconf")
        if word in c
    )
    assert counts["qsub"] == 1
    assert counts["qstat -xml"] <= rounds + 1  # one per poll round, none per job
    assert counts["qacct"] == 0  # every task wrote its exit file: the history is never asked
    assert counts["qconf"] == 0  # 100 tasks is within the default array size: the site is not asked
    outcomes = scheduler.clustrix_fetch(handle=handle, config=config)
    assert [o.value[0] for o in outcomes] == [i * i for i in range(100)]


@pytest.fixture
def fresh_plugins():
    from clustrix.plugin.manager import reset_plugins

    reset_plugins()
    yield
    reset_plugins()


def nap_and_double(x: int) -> int:
    time.sleep(0.2)
    return 2 * x


def test_pending_tasks_are_deleted_once_every_call_is_done(local):
    """Two tasks at a time (-tc 2) steal all 30 calls; the tasks still queued are then qdel'd, never run."""
    configure(max_parallel_jobs=2)
    futures = cluster()(nap_and_double).submit_map(range(30))
    assert [f.result(timeout=120) for f in futures] == [2 * x for x in range(30)]
    native_id = futures[0].handle.native_id
    deadline = time.monotonic() + 60
    while sge("qstat", "-j", native_id).returncode == 0:
        assert time.monotonic() < deadline, f"array {native_id} is still queued"
        time.sleep(0.2)
    ran = sge("qacct", "-j", native_id).stdout.count("\ntaskid")
    assert 2 <= ran <= 6, f"{ran} of 30 tasks ran"
