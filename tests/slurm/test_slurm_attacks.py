"""Attacks by a co-user of the SLURM login node (``clustrix-mallory``), on the login node and over SSH."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from clustrix import cluster, environment, reset_config
from clustrix.runner import UnsafePathError
from tests.testbed import cousers
from tests.testbed.cousers import ProcWatch, plant_outcome, read_canary, wait_for_flag_then_vanish

pytestmark = pytest.mark.testbed_slurm


@pytest.fixture
def options(slurm_cluster: Any, transport_options: dict[str, Any], tmp_path: Path, monkeypatch: Any) -> Iterator[Any]:
    monkeypatch.setenv("CLUSTRIX_DATA_DIR", str(tmp_path / "registry"))
    reset_config()
    environment.forget_prepared()
    cloudpickle.register_pickle_by_value(cousers)
    yield {"cluster_type": "slurm", "job_poll_interval": 0.2, **transport_options}
    cloudpickle.unregister_pickle_by_value(cousers)
    reset_config()


def work_dir(options: dict[str, Any]) -> tuple[Path, str]:
    """The work dir as a local path (the login node is this machine), and the user jobs run as."""
    remote = options["remote_work_dir"]
    if "cluster_host" not in options:
        return Path(remote), "root"
    user = options["username"]
    return Path(os.path.expanduser(f"~{user}")) / remote.removeprefix("~/"), user


@pytest.mark.parametrize("kind", ["planted", "symlink"])
def test_an_unsafe_outcome_fails_its_call_at_once_naming_path_and_reason(
    options: dict[str, Any], mallory: Path, kind: str
) -> None:
    """SLURM's fetch looks with lstat: a link to a forged outcome, or one mallory owns, is never unpickled."""
    flag, unpickled = mallory / "flag", mallory / "unpickled"
    future = cluster(**options)(wait_for_flag_then_vanish).submit(str(flag))
    base, user = work_dir(options)
    outcome = base / future.job_id / "out" / "0.pkl"
    reason = plant_outcome(outcome, kind, user=user, directory=mallory, unpickled=unpickled)
    flag.touch()
    try:  # the previous code retried the fetch for five minutes (and unpickled a forged file each time)
        error = future.exception(timeout=180)
    except TimeoutError:
        error = None
    assert not unpickled.exists(), "the forged outcome was unpickled"
    assert isinstance(error, UnsafePathError), repr(error)
    assert f"{outcome} on " in str(error) and reason in str(error)


def test_a_co_user_reading_every_process_arguments_never_sees_a_secret(options: dict[str, Any], mallory: Path) -> None:
    """mallory scans /proc/*/cmdline during the environment check, staging, sbatch, polling and the job itself."""
    with ProcWatch(mallory) as watch:
        value = cluster(**options, environment_variables={"CLUSTRIX_CANARY": watch.canary})(read_canary)()
    assert value == watch.canary  # the secret did reach the job
    assert watch.scans > 1
    assert watch.seen == [], f"mallory read the secret in: {watch.seen}"


def test_a_work_dir_others_can_write_is_refused_and_left_as_it_was(options: dict[str, Any]) -> None:
    """SLURM used to chmod such a directory to 0700 and use it: whatever was planted in it stayed."""
    base, user = work_dir(options)
    shared = base.parent / f"shared-{secrets.token_hex(4)}"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    os.chown(shared, *cousers.ids(user))
    remote = str(shared) if user == "root" else f"~/{shared.relative_to(Path(os.path.expanduser(f'~{user}')))}"
    with pytest.raises(UnsafePathError, match=rf"{shared} on .* is writable by other users.*chmod 700 it"):
        cluster(**{**options, "remote_work_dir": remote})(read_canary)()
    assert oct(shared.stat().st_mode & 0o777) == oct(0o777)
    assert list(shared.iterdir()) == []
