"""What a call costs on the wire, and that inlined outcomes keep every safety check."""

from __future__ import annotations

import shlex
import sys
import time
from typing import Any

import cloudpickle
import pytest

from clustrix import cluster
from clustrix.batch.engine import BatchScheduler
from clustrix.config.settings import resolve_config
from clustrix.plugin.manager import transport_for
from clustrix.plugin.types import JobState
from clustrix.remote import runner
from clustrix.remote.report import INLINE_LIMIT
from clustrix_ssh.dialect import SSHDialect
from tests.ssh.helpers import REPLICATE, config_for, scheduler, submit, wait
from tests.testbed.sshd import SSHServer

pytestmark = pytest.mark.testbed_ssh
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def identity(x: Any) -> Any:
    return x


def test_a_warm_call_is_two_commands_and_no_sftp_request(ssh_config: dict[str, Any]) -> None:
    @cluster(**ssh_config, replicate_distributions=REPLICATE)
    def add(a: int, b: int) -> int:
        return a + b

    assert add(1, 2) == 3  # cold: environment check, home directory, connection

    transport = transport_for(resolve_config(overrides=ssh_config))
    before = transport.operations()  # type: ignore[attr-defined]
    assert add(20, 22) == 42
    after = transport.operations()  # type: ignore[attr-defined]
    assert after["commands"] - before["commands"] == 2  # submit, then one watch that brings the result
    assert after["sftp_requests"] - before["sftp_requests"] == 0


def test_outcomes_larger_than_the_inline_limit_come_back_in_one_raw_command(ssh_config: dict[str, Any]) -> None:
    config = config_for(ssh_config)
    value = b"x" * (INLINE_LIMIT * 3)
    handle = submit(config, identity, (value,))
    wait(config, handle)
    other_process = BatchScheduler(SSHDialect())
    transport = transport_for(config)
    other_process.clustrix_poll([handle], config)
    before = transport.operations()  # type: ignore[attr-defined]
    (outcome,) = other_process.clustrix_fetch(handle, config)
    assert outcome is not None and outcome.value == value
    assert transport.operations()["commands"] - before["commands"] == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("inlined", [True, False], ids=["outcomes-inlined-by-poll", "outcomes-fetched-later"])
@pytest.mark.parametrize("target", ["job dir", "out dir", "outcome file"])
def test_outcomes_writable_by_other_users_are_refused(
    ssh_config: dict[str, Any], sshd: SSHServer, target: str, inlined: bool
) -> None:
    config = config_for(ssh_config)
    handle = submit(config, identity, (b"small" if inlined else b"y" * (INLINE_LIMIT * 2),))
    wait(config, handle)
    assert handle.job_dir is not None
    path = {
        "job dir": handle.job_dir,
        "out dir": f"{handle.job_dir}/out",
        "outcome file": f"{handle.job_dir}/{runner.outcome_name(0)}",
    }[target]
    assert sshd.run_as_user(f"chmod g+w {shlex.quote(path)}").returncode == 0
    other_process = BatchScheduler(SSHDialect())
    other_process.clustrix_poll([handle], config)
    with pytest.raises(runner.UnsafePathError, match="writable by other users"):
        other_process.clustrix_fetch(handle, config)


def test_an_outcome_replaced_by_a_symlink_is_refused(ssh_config: dict[str, Any], sshd: SSHServer) -> None:
    config = config_for(ssh_config)
    handle = submit(config, identity, (1,))
    wait(config, handle)
    outcome = f"{handle.job_dir}/{runner.outcome_name(0)}"
    elsewhere = f"{sshd.home}/elsewhere.pkl"
    script = f"cp {shlex.quote(outcome)} {elsewhere} && ln -sf {elsewhere} {shlex.quote(outcome)}"
    assert sshd.run_as_user(script).returncode == 0
    other_process = BatchScheduler(SSHDialect())
    other_process.clustrix_poll([handle], config)
    with pytest.raises(runner.UnsafePathError):
        other_process.clustrix_fetch(handle, config)


def nap(seconds: float) -> float:
    import time as remote_time

    remote_time.sleep(seconds)
    return seconds


def test_a_watched_job_is_reported_running_without_asking_the_host(ssh_config: dict[str, Any]) -> None:
    config = config_for(ssh_config)
    handle = submit(config, nap, (1.5,))
    transport = transport_for(config)
    before = transport.operations()  # type: ignore[attr-defined]
    statuses = scheduler().poll([handle], config)
    assert statuses[handle.job_id].state is JobState.RUNNING
    assert transport.operations()["commands"] == before["commands"]  # type: ignore[attr-defined]
    started = time.monotonic()
    wait(config, handle)
    assert time.monotonic() - started < 5
