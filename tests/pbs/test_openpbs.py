"""``@cluster`` end to end on a real OpenPBS (in its network namespace), locally and over SSH.

The engine's conformance suite covers what every batch scheduler must do; these tests
prove what is PBS's own: the queue, Exit_status -29 and -27, ``Can Never Run``, qdel's
256+signal, ``qrerun`` of a rerunnable job, ``checkpoint()`` on PBS's SIGTERM, the site
query and flavour detection.
"""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import CancelledError
from typing import Any

import pytest

from clustrix import JobOutOfMemoryError, JobTimeoutError, cluster
from clustrix.errors import JobError
from clustrix_pbs import parse
from clustrix_pbs.dialect import PBSProDialect
from clustrix_pbs.scheduler import PBSScheduler
from tests.counting import counter_with_checkpoint
from tests.testbed import openpbs

pytestmark = pytest.mark.testbed_pbs


def history(bed: openpbs.OpenPBS, native_id: str) -> list[parse.QstatRecord]:
    """What PBS itself says about a job (and its subjobs), asked as the operator."""
    result = bed.run(["qstat", "-x", "-f", "-F", "json", "-t", native_id], as_user=False, check=False)
    return parse.parse_qstat_json(result.stdout)


def wait_for_state(bed: openpbs.OpenPBS, native_id: str, wanted: str, timeout: float = 60) -> parse.QstatRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in history(bed, native_id):
            if record.job_id == native_id and record.state == wanted:
                return record
        time.sleep(0.2)
    raise AssertionError(f"{native_id} never reached state {wanted}")


def test_a_call_and_a_map_come_back_through_both_transports(pbs_options: dict[str, Any]) -> None:
    @cluster(cores=1, memory="200MB", time="00:05:00", **pbs_options)
    def square(x: int) -> int:
        return x * x

    assert square(7) == 49
    futures = square.submit_map(range(20))
    assert len({f.job_id for f in futures}) == 1
    assert [f.result(timeout=120) for f in futures] == [x * x for x in range(20)]
    assert futures[0].handle.native_id.split(".")[0].endswith("[]")  # one PBS array (-J 1-20)


def test_a_map_on_a_named_queue_is_one_array_there(pbs_complex: openpbs.OpenPBS, pbs_local: dict[str, Any]) -> None:
    @cluster(queue=pbs_complex.short_queue, time="00:02:00", **pbs_local)
    def where(sample: str) -> str:
        import os

        return f"{sample}:{os.environ['PBS_QUEUE']}:{os.environ['PBS_ARRAY_INDEX']}"

    futures = where.submit_map(["a", "b", "c"])
    results = [f.result(timeout=120) for f in futures]
    assert [r.split(":")[:2] for r in results] == [["a", "short"], ["b", "short"], ["c", "short"]]
    records = history(pbs_complex, futures[0].handle.native_id)
    parent = next(r for r in records if r.array_parent)
    assert parent.queue == "short"
    assert parent.attributes["array_indices_submitted"] == "1-3"


def test_walltime_overrun_raises_jobtimeouterror_with_pbs_words(pbs_local: dict[str, Any]) -> None:
    @cluster(time="00:00:03", **pbs_local)
    def sleeper() -> None:
        time.sleep(300)

    with pytest.raises(JobTimeoutError) as info:
        sleeper()
    assert "Exit_status -29" in str(info.value)
    assert "walltime" in str(info.value)


def test_memory_overrun_raises_joboutofmemoryerror(pbs_local: dict[str, Any]) -> None:
    @cluster(memory="100MB", time="00:05:00", **pbs_local)
    def hog() -> int:
        block = bytearray(400 * 2**20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(20)  # mom samples memory every 1-2 s on the testbed ($min/max_check_poll)
        return len(block)

    with pytest.raises(JobOutOfMemoryError) as info:
        hog()
    assert "Exit_status -27" in str(info.value)


def test_an_impossible_request_fails_fast_with_the_comment_and_is_deleted(
    pbs_complex: openpbs.OpenPBS, pbs_local: dict[str, Any]
) -> None:
    @cluster(cores=64, **pbs_local)
    def never() -> None:
        return None

    future = never.submit()
    with pytest.raises(JobError, match="Can Never Run: Insufficient amount of resource: ncpus"):
        future.result(timeout=120)
    native_id = future.handle.native_id
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and history(pbs_complex, native_id)[0].state != "F":
        time.sleep(0.2)
    (record,) = history(pbs_complex, native_id)
    assert record.state == "F" and record.exit_status is None  # deleted while queued


def wait_until_counting(bed: openpbs.OpenPBS, job_dir: str | None, timeout: float = 60) -> None:
    """Until the runner has claimed call 0 (it is running), plus a second of counting."""
    assert job_dir is not None
    t = bed.transport()
    deadline = time.monotonic() + timeout
    while t.run(["test", "-e", f"{job_dir}/out/0.claim"]).returncode != 0:
        assert time.monotonic() < deadline, "the call never started"
        time.sleep(0.2)
    time.sleep(1)


def test_cancel_of_a_checkpointing_call_ends_it_with_sigterms_256_plus_signal_not_a_requeue(
    pbs_complex: openpbs.OpenPBS, pbs_local: dict[str, Any]
) -> None:
    """qdel sends the same SIGTERM as qrerun; after clustrix's cancel the runner ends by it at once, unrequeued."""
    future = cluster(time="00:05:00", **pbs_local)(counter_with_checkpoint(0.25)).submit(1200)
    native_id = future.handle.native_id
    wait_until_counting(pbs_complex, future.handle.job_dir)
    assert future.cancel()
    record = wait_for_state(pbs_complex, native_id, "F")
    assert record.exit_status == 256 + signal.SIGTERM
    with pytest.raises(CancelledError):
        future.result(timeout=60)


def test_a_checkpointing_call_rerun_by_the_operator_resumes_from_its_checkpoint(
    pbs_complex: openpbs.OpenPBS, pbs_local: dict[str, Any]
) -> None:
    """qrerun: SIGTERM (the runner saves the checkpoint), PBS requeues the job, the rerun resumes."""
    future = cluster(time="00:05:00", **pbs_local)(counter_with_checkpoint(0.25)).submit(40)  # 10 s of counting
    native_id = future.handle.native_id
    wait_until_counting(pbs_complex, future.handle.job_dir)
    pbs_complex.run(["qrerun", native_id], as_user=False)
    result = future.result(timeout=120)
    assert result["counted"] == 40
    assert result["resumed_at"] > 0  # the run that delivered it started from the checkpoint
    (record,) = history(pbs_complex, native_id)
    assert int(record.attributes["run_count"]) >= 2


def test_a_rerunnable_job_rerun_by_the_operator_still_returns_every_result(
    pbs_complex: openpbs.OpenPBS, pbs_local: dict[str, Any]
) -> None:
    @cluster(time="00:05:00", **pbs_local)
    def slow(x: int) -> int:
        time.sleep(8)  # long enough for the rerun to land while the call runs
        return x + 1

    futures = slow.submit_map([1])
    native_id = futures[0].handle.native_id
    wait_for_state(pbs_complex, native_id, "R")
    # qrerun needs operator rights (a user gets "Unauthorized Request"): the site or a preemption does it
    pbs_complex.run(["qrerun", native_id], as_user=False)
    assert futures[0].result(timeout=120) == 2
    (record,) = history(pbs_complex, native_id)
    assert int(record.attributes["run_count"]) >= 2


def test_the_site_query_reads_the_servers_max_array_size(pbs_complex: openpbs.OpenPBS) -> None:
    dialect = PBSProDialect()
    argv = dialect.site_argv()
    assert argv is not None
    result = pbs_complex.run(argv)
    assert dialect.parse_site(result.stdout).max_array_size == pbs_complex.max_array_size


def test_the_flavour_is_detected_once_per_host_from_qstat_version(
    pbs_complex: openpbs.OpenPBS, pbs_plugins: None
) -> None:
    calls: list[list[str]] = []

    class Counting(openpbs.NetnsTransport):
        def run(self, argv: Any, **kw: Any) -> Any:
            calls.append(list(argv))
            return super().run(argv, **kw)

    scheduler = PBSScheduler(transport_factory=lambda config: Counting(pbs_complex.settings()))
    config = {"cluster_host": openpbs.NETNS_HOST}
    assert scheduler.flavour(_Config(config)) is parse.Flavour.PBSPRO
    assert scheduler.flavour(_Config(config)) is parse.Flavour.PBSPRO
    assert calls == [["qstat", "--version"]]
    assert scheduler.flavour(_Config({**config, "pbs_flavor": "torque"})) is parse.Flavour.TORQUE


class _Config:
    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.connection_key = (json.dumps(values, sort_keys=True),)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


def test_qdel_warns_a_running_job_with_sigterm_before_killing_it(pbs_complex: openpbs.OpenPBS) -> None:
    """What docs/pbs.md says about kill_delay: a deleted job gets SIGTERM first, and may end on its own."""
    t = pbs_complex.transport()
    marker = t.expand("~/.clustrix/pbs-tests/sigterm-seen")
    ready = t.expand("~/.clustrix/pbs-tests/trap-set")
    t.makedirs(t.expand("~/.clustrix/pbs-tests"))
    t.run(["rm", "-f", marker, ready])
    # MoM signals the job's whole session: the sleep dies of the same SIGTERM, so the script must not
    # end with it (bash could then exit before it ran its trap); short sleeps in a loop keep it running
    script = f"trap 'echo TERM > {marker}; exit 0' TERM; touch {ready}; while :; do sleep 1; done"
    native_id = t.run(["qsub", "-f", "-o", "/dev/null", "-e", "/dev/null", "--", "/bin/bash", "-c", script], check=True)
    job = native_id.stdout.strip()
    wait_for_state(pbs_complex, job, "R")
    deadline = time.monotonic() + 60
    while t.run(["test", "-e", ready]).returncode != 0:  # "R" comes before bash has set its trap
        assert time.monotonic() < deadline, "the job's bash never set its trap"
        time.sleep(0.2)
    t.run(["qdel", job], check=True)
    record = wait_for_state(pbs_complex, job, "F")
    assert t.run(["cat", marker]).stdout.strip() == "TERM"
    assert record.exit_status == 0  # the job ended itself on SIGTERM, inside kill_delay
