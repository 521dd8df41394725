"""The ssh backend against the real sshd: submit, poll, fetch, cancel, logs, survival."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from clustrix.batch.engine import BatchScheduler
from clustrix.plugin.types import JobState
from clustrix_ssh.dialect import SSHDialect
from tests.held_calls import arguments, finish_raise_or_wait, held, release
from tests.ssh.helpers import REPLICATE, config_for, run, scheduler, submit, wait
from tests.testbed.sshd import SSHServer

pytestmark = pytest.mark.testbed_ssh
# test functions are pickled by value: the remote side has no "tests" package
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def whoami(x: int) -> tuple[int, str, str]:
    import getpass
    import sys as remote_sys

    return x * 2, getpass.getuser(), remote_sys.executable


def explode(message: str) -> None:
    raise ValueError(message)


def test_a_call_runs_as_the_remote_user_in_the_replicated_venv(ssh_config: dict[str, Any], sshd: SSHServer) -> None:
    (outcome,) = run(config_for(ssh_config), whoami, (21,))
    assert outcome is not None and outcome.ok
    value, user, executable = outcome.value
    assert (value, user) == (42, sshd.user)
    assert executable.startswith(f"{sshd.home}/.clustrix/envs/")


def test_a_raising_function_comes_back_as_its_exception(ssh_config: dict[str, Any]) -> None:
    (outcome,) = run(config_for(ssh_config), explode, ("bad value",))
    assert outcome is not None and not outcome.ok
    assert isinstance(outcome.exception, ValueError) and str(outcome.exception) == "bad value"
    assert "in explode" in (outcome.traceback or "")


def test_an_array_returns_every_call_in_order_with_bounded_parallelism(ssh_config: dict[str, Any]) -> None:
    config = config_for(ssh_config, max_parallel_jobs=2)
    handle = submit(config, whoami, *[(i,) for i in range(7)])
    status = wait(config, handle)
    assert status.state is JobState.COMPLETED and status.exit_code == 0
    outcomes = scheduler().fetch(handle, config)
    assert [o.value[0] for o in outcomes if o is not None] == [2 * i for i in range(7)]


def chatty() -> str:
    print("to stdout", flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    return "ok"


def test_logs_hold_the_jobs_stdout_and_stderr(ssh_config: dict[str, Any]) -> None:
    config = config_for(ssh_config)
    handle = submit(config, chatty)
    wait(config, handle)
    assert "to stdout" in scheduler().read_logs(handle, config, "stdout")
    assert "to stderr" in scheduler().read_logs(handle, config, "stderr")


def spawn_and_sleep(pid_file: str) -> None:
    import subprocess
    import time as remote_time

    child = subprocess.Popen(["sleep", "300"])
    with open(pid_file, "w") as fh:
        fh.write(f"{os.getpid()} {child.pid}")
    remote_time.sleep(300)


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


def test_cancel_kills_the_whole_process_group(ssh_config: dict[str, Any], sshd: SSHServer) -> None:
    config = config_for(ssh_config)
    pid_file = f"{sshd.home}/cancel-{time.monotonic_ns()}.pid"
    handle = submit(config, spawn_and_sleep, (pid_file,))
    deadline = time.monotonic() + 30
    while not os.path.exists(pid_file) or not Path(pid_file).read_text():
        assert time.monotonic() < deadline, scheduler().read_logs(handle, config, "stderr")
        time.sleep(0.1)
    runner_pid, child_pid = map(int, Path(pid_file).read_text().split())
    assert scheduler().poll([handle], config)[handle.job_id].state is JobState.RUNNING
    assert scheduler().cancel(handle, config)
    assert _gone(runner_pid) and _gone(child_pid)
    assert wait(config, handle).state is JobState.CANCELLED
    assert scheduler().fetch(handle, config) == [None]


def killed_runner() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_runner_killed_without_an_exit_file_is_failed(ssh_config: dict[str, Any]) -> None:
    config = config_for(ssh_config)
    handle = submit(config, killed_runner)
    status = wait(config, handle)
    assert status.state is JobState.FAILED and "exit file" in (status.reason or "")


def nap_then_answer(seconds: float) -> str:
    import time as remote_time

    remote_time.sleep(seconds)
    return "survived"


def test_a_job_survives_sshd_restarting_while_it_runs(ssh_config: dict[str, Any], sshd: SSHServer) -> None:
    config = config_for(ssh_config)
    handle = submit(config, nap_then_answer, (2.0,))
    sshd.restart()  # drops the connection that started the job
    assert scheduler().poll([handle], config)[handle.job_id].state is JobState.RUNNING
    assert wait(config, handle).state is JobState.COMPLETED
    (outcome,) = scheduler().fetch(handle, config)
    assert outcome is not None and outcome.value == "survived"


def reverse(data: bytes) -> bytes:
    return data[::-1]


def test_a_20_mb_argument_and_result_round_trip(ssh_config: dict[str, Any]) -> None:
    data = os.urandom(20 * 1024 * 1024)
    started = time.perf_counter()
    (outcome,) = run(config_for(ssh_config), reverse, (data,))
    elapsed = time.perf_counter() - started
    assert outcome is not None and outcome.value == data[::-1]
    print(f"20 MB argument + 20 MB result over the ssh backend: {elapsed:.2f} s")


def test_jobs_this_process_does_not_watch_are_polled_and_fetched_in_one_remote_command(
    ssh_config: dict[str, Any], sshd: SSHServer
) -> None:
    config = config_for(ssh_config)
    handles = [submit(config, whoami, (i,)) for i in range(4)]
    for handle in handles:
        wait(config, handle)
    other_process = BatchScheduler(SSHDialect())  # knows nothing of these jobs, like Job.attach elsewhere
    before = _exec_requests(sshd)
    statuses = other_process.clustrix_poll(handles, config)
    assert {s.state for s in statuses.values()} == {JobState.COMPLETED} and len(statuses) == 4
    outcomes = [other_process.clustrix_fetch(handle, config) for handle in handles]
    assert [o.value[0] for (o,) in outcomes if o is not None] == [0, 2, 4, 6]
    assert _exec_requests(sshd) - before == 1  # the poll carried the outcomes


def _exec_requests(sshd: SSHServer) -> int:
    # sshd at LogLevel VERBOSE does not log exec requests; count sessions opened instead
    return Path(sshd.directory, "sshd.log").read_text().count("Starting session: command")


def test_a_work_dir_other_users_can_write_is_refused_before_a_job_is_written(
    ssh_config: dict[str, Any], sshd: SSHServer
) -> None:
    from clustrix.errors import UnsafePathError

    assert sshd.run_as_user("rm -rf ~/shared-work && mkdir ~/shared-work && chmod 777 ~/shared-work").returncode == 0
    config = config_for(ssh_config, remote_work_dir="~/shared-work")
    with pytest.raises(UnsafePathError, match=r"shared-work on .* is writable by other users.*chmod 700 it"):
        submit(config, whoami, (1,))
    # nothing was written there (not even the environment), and its mode was left as the user set it
    assert sshd.run_as_user("find ~/shared-work -mindepth 1").stdout == ""
    assert sshd.run_as_user("stat -c %a ~/shared-work").stdout.strip() == "777"


def test_cancel_and_poll_leave_alone_a_process_group_that_reused_a_dead_jobs_id(
    ssh_config: dict[str, Any], sshd: SSHServer
) -> None:
    import attrs

    config = config_for(ssh_config)
    handle = submit(config, whoami, (1,))
    assert wait(config, handle).state is JobState.COMPLETED
    # an unrelated program of the same user now leads a process group: pretend it got the job's id
    started = sshd.run_as_user("setsid sleep 60 >/dev/null 2>&1 </dev/null & echo $!")
    stranger = int(started.stdout.strip())
    try:
        sshd.run_as_user(f"rm -f {handle.job_dir}/out/task-*.exit")  # the job now looks unfinished
        reused = attrs.evolve(handle, native_id=f"{stranger}:{handle.job_id}")  # the native id is PGID:JOBID
        fresh = BatchScheduler(SSHDialect())
        assert fresh.clustrix_poll([reused], config)[handle.job_id].state is not JobState.RUNNING
        fresh.clustrix_cancel(reused, config)
        assert sshd.run_as_user(f"kill -0 {stranger}").returncode == 0, "cancel killed an unrelated process"
    finally:
        sshd.run_as_user(f"kill {stranger}")


def test_a_watched_map_counts_its_calls_done_failed_running_and_pending(ssh_config: dict[str, Any]) -> None:
    from clustrix import Job, cluster

    mapped = cluster(replicate_distributions=REPLICATE, job_poll_interval=0.2, **ssh_config)(finish_raise_or_wait)
    with held() as folder:  # call 0 returns, call 1 raises, calls 2 and 3 wait until let go
        futures = mapped.submit_map(*arguments(folder, 4, raising=1, first_held=2))
        deadline = time.monotonic() + 120
        seen = None
        while seen is None:
            status = futures[0].last_status  # what the poller of this process (the one watching) saw last
            counts = status.counts if status is not None else None
            assert counts is None or sum(counts.values()) == 4, counts
            if counts is not None and (counts["done"], counts["failed"]) == (1, 1) and counts["running"]:
                seen = counts
            assert time.monotonic() < deadline, f"the calls were never counted while running: {status}"
            time.sleep(0.1)
        assert seen["running"] + seen["pending"] == 2
        attached = Job.attach(futures[0].job_id).status().counts  # asks the host, as clustrix status does
        assert attached is not None and (attached["done"], attached["failed"]) == (1, 1)
        release(folder)
        assert [f.exception(timeout=120) is None for f in futures] == [True, False, True, True]
