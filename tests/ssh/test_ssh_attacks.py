"""Attacks by a co-user of the ssh host (``clustrix-mallory``) on the user's jobs, secrets and results.

Each test plays one attack of issue 8 against the real sshd testbed: mallory runs her
own programs as her own unprivileged account on the same host while the user submits.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from clustrix import reset_config
from clustrix.errors import UnsafePathError
from clustrix.remote.environment.prepare import forget_prepared
from tests.ssh.helpers import config_for, run
from tests.testbed import cousers
from tests.testbed.cousers import (
    REQUIREMENTS_SWAPPER,
    ProcWatch,
    as_mallory,
    evil_wheel,
    ids,
    plant_outcome,
    read_canary,
    start_as_mallory,
    wait_for_flag_then_vanish,
)
from tests.testbed.sshd import SSHServer
from tests.testbed.system import wait_for

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.testbed_ssh

MALLORY_PYTHON = "/usr/bin/python3"


@pytest.fixture(autouse=True)
def environment_checked_again() -> Iterator[None]:
    forget_prepared()  # every attack sees the environment check run
    cloudpickle.register_pickle_by_value(cousers)  # the jobs' functions live there
    yield
    cloudpickle.unregister_pickle_by_value(cousers)


def shared_dir(sshd: SSHServer, mode: str) -> str:
    """A work dir of the user's in /tmp with ``mode`` (as users make "shared" dirs)."""
    path = f"/tmp/clustrix-shared-{time.monotonic_ns()}"
    assert sshd.run_as_user(f"mkdir {path} && chmod {mode} {path}").returncode == 0
    return path


def stop_watcher(process: Any, stop: Path) -> list[str]:
    stop.touch()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return out.splitlines()


def hello() -> str:
    return "hello"


def test_a_co_user_swapping_the_requirements_during_the_venv_build_gets_nothing_run(
    ssh_config: dict[str, Any], sshd: SSHServer, mallory: Path
) -> None:
    """mallory pre-creates envs/ in a world-writable work dir and swaps the requirements file for her wheel."""
    work = shared_dir(sshd, "1777")
    marker = mallory / "pwned"
    wheel = evil_wheel(mallory, marker)
    assert as_mallory(f"mkdir {work}/envs && chmod 777 {work}/envs").returncode == 0
    ready, stop = mallory / "ready", mallory / "stop"
    swapper = start_as_mallory(
        [MALLORY_PYTHON, "-c", REQUIREMENTS_SWAPPER, f"{work}/envs", str(wheel), str(ready), str(stop)]
    )
    wait_for(ready.exists, timeout=30, what="mallory's swapper")
    try:
        with pytest.raises(Exception) as caught:
            run(config_for(ssh_config, remote_work_dir=work), hello)
    finally:
        swapped = stop_watcher(swapper, stop)
    assert not marker.exists(), f"mallory's code ran as uid {marker.read_text().split()}"
    assert swapped == [""], f"mallory swapped {swapped}"
    assert isinstance(caught.value, UnsafePathError), repr(caught.value)
    assert f"{work} on 127.0.0.1 is writable by other users" in str(caught.value)
    assert sshd.run_as_user(f"find {work} -user $(id -u) -mindepth 1").stdout == ""  # the user wrote nothing


def test_a_planted_envs_symlink_that_outlived_chmod_is_refused(
    ssh_config: dict[str, Any], sshd: SSHServer, mallory: Path
) -> None:
    """While the work dir was world-writable, mallory made envs a link to her dir; the user then chmods it 700."""
    work = shared_dir(sshd, "777")
    (mallory / "envs").mkdir(mode=0o777)
    os.chown(mallory / "envs", *ids("clustrix-mallory"))
    (mallory / "envs").chmod(0o777)
    assert as_mallory(f"ln -s {mallory}/envs {work}/envs").returncode == 0
    assert sshd.run_as_user(f"chmod 700 {work}").returncode == 0  # the fix an older error message advised
    with pytest.raises(UnsafePathError, match=rf"{work}/envs on .* is a symbolic link.*remove the link"):
        run(config_for(ssh_config, remote_work_dir=work), hello)
    assert os.listdir(mallory / "envs") == []  # nothing of the user's went into mallory's directory


def test_a_co_user_reading_every_process_arguments_never_sees_a_secret(
    ssh_config: dict[str, Any], sshd: SSHServer, mallory: Path
) -> None:
    """mallory scans /proc/*/cmdline during the environment check, the launch, the watch and the fetch."""
    with ProcWatch(mallory) as watch:
        config = config_for(ssh_config, environment_variables={"CLUSTRIX_CANARY": watch.canary})
        (outcome,) = run(config, read_canary)
    assert outcome is not None and outcome.value == watch.canary  # the secret did reach the job
    assert watch.scans > 1
    assert watch.seen == [], f"mallory read the secret in: {watch.seen}"


@pytest.mark.parametrize("kind", ["planted", "symlink"])
def test_an_unsafe_outcome_fails_its_call_at_once_naming_path_and_reason(
    ssh_config: dict[str, Any], sshd: SSHServer, mallory: Path, kind: str, tmp_path: Path, monkeypatch: Any
) -> None:
    """An outcome file mallory owns, or a link to a forged one, fails the future at once; nothing is unpickled."""
    from clustrix import cluster

    monkeypatch.setenv("CLUSTRIX_DATA_DIR", str(tmp_path / "registry"))
    reset_config()
    work = f"{sshd.home}/unsafe-outcome-{time.monotonic_ns()}"
    flag = mallory / "flag"
    unpickled = mallory / "unpickled"
    options = {**ssh_config, "replicate_distributions": ["clustrix-core"], "remote_work_dir": work}
    func = cluster(**options, job_poll_interval=0.2)(wait_for_flag_then_vanish)
    future = func.submit(str(flag))
    outcome = Path(work) / future.job_id / "out" / "0.pkl"
    reason = plant_outcome(outcome, kind, user=sshd.user, directory=mallory, unpickled=unpickled)
    flag.touch()
    try:  # the previous code retried the fetch for five minutes (and unpickled a forged file each time)
        error = future.exception(timeout=180)
    except TimeoutError:
        error = None
    reset_config()
    assert not unpickled.exists(), "the forged outcome was unpickled"
    assert isinstance(error, UnsafePathError), repr(error)
    assert f"{outcome} on " in str(error) and reason in str(error)


def where_job_runs() -> tuple[str, str]:
    """A job's function: the directory the user's pre-execution commands ran in, and the job's own."""
    return os.environ["CX_PRELUDE_PWD"], os.getcwd()


def test_the_users_commands_and_the_job_start_in_the_private_job_dir(ssh_config: dict[str, Any]) -> None:
    """The prelude (module loads, conda activate, the user's commands) ran where the launch started.

    Now the driver changes into the job's private directory before anything else runs, so nothing
    of the job starts in a directory another user might write.
    """
    from clustrix.plugin.manager import get_scheduler
    from tests.ssh.helpers import submit, wait

    config = config_for(ssh_config, pre_execution_commands=['export CX_PRELUDE_PWD="$(pwd)"'])
    handle = submit(config, where_job_runs)
    wait(config, handle, timeout=300)
    (outcome,) = get_scheduler("ssh").fetch(handle, config)
    assert outcome is not None and outcome.value == (handle.job_dir, handle.job_dir), outcome
