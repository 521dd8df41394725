"""Attacks by a co-user of the SLURM login node (``clustrix-mallory``), on the login node and over SSH."""

from __future__ import annotations

import importlib
import os
import secrets
import shutil
import sys
import tarfile  # noqa: F401 - loaded before a test changes into mallory's folder (see PLANTED)
import threading
import traceback  # noqa: F401
import zipfile  # noqa: F401
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from clustrix import cluster, reset_config
from clustrix.errors import UnsafePathError
from clustrix.remote.environment.prepare import forget_prepared
from tests.slurm.conftest import REPLICATE
from tests.testbed import cousers
from tests.testbed.cousers import MALLORY, ProcWatch, as_mallory, plant_outcome, read_canary, wait_for_flag_then_vanish

pytestmark = pytest.mark.testbed_slurm


@pytest.fixture
def options(slurm_cluster: Any, transport_options: dict[str, Any], tmp_path: Path, monkeypatch: Any) -> Iterator[Any]:
    monkeypatch.setenv("CLUSTRIX_DATA_DIR", str(tmp_path / "registry"))
    reset_config()
    forget_prepared()
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


#: What mallory leaves in a folder the user works from: modules clustrix's own Python runs would import
#: from the current directory (the code unpacker, the venv build, pip, the import check, the runner).
PLANTED = (
    "tarfile.py",
    "traceback.py",
    "shutil.py",
    "zipfile.py",
    "venv.py",
    "cloudpickle.py",
    "pip/__init__.py",
    "pip/__main__.py",
    "clustrix/__init__.py",
    "clustrix/remote/runner.py",
)


def plant_modules(directory: Path, canary: Path) -> None:
    """mallory's modules in ``directory``: each one appends its name to ``canary`` if any Python imports it."""
    for name in PLANTED:
        path = directory / name
        path.parent.mkdir(mode=0o777, exist_ok=True)
        path.write_text(f"open({str(canary)!r}, 'a').write({name!r} + chr(10))\n")
        for planted in (path, path.parent):
            os.chown(planted, *cousers.ids(MALLORY))


@pytest.mark.parametrize("venv", ["python_executable", "replicated"])
def test_modules_a_co_user_plants_where_the_user_submits_never_run_and_the_job_starts_in_its_job_dir(
    options: dict[str, Any], mallory: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, venv: str
) -> None:
    """The user submits from a folder mallory can write (a shared project); clustrix imports nothing from it.

    On the login node (no cluster_host) every script clustrix runs used to start there: the code
    unpacker's ``python -c`` imported mallory's tarfile.py, ``python3 -m venv`` her venv.py, and pip
    her pip/. The call ships a module of the user's own (so the unpacker runs) and, ``replicated``,
    builds the venv (``-m venv``, ``-m pip``, ``-m zipfile``) from there too.
    """
    canary = mallory / "ran"
    plant_modules(mallory, canary)
    modules = tmp_path / "modules"
    modules.mkdir()
    name = f"where_{secrets.token_hex(4)}"
    (modules / f"{name}.py").write_text("import os\n\n\ndef where():\n    return os.getcwd()\n")
    monkeypatch.syspath_prepend(str(modules))
    module = importlib.import_module(name)
    if venv == "replicated":
        options = {**options, "replicate_distributions": REPLICATE}
        options.pop("python_executable", None)
    monkeypatch.chdir(mallory)
    future = cluster(**options)(module.where).submit()
    job_dir = future.result(timeout=600)
    monkeypatch.chdir(tmp_path)
    ran = canary.read_text() if canary.exists() else ""
    assert ran == "", f"mallory's modules ran as the user: {ran.split()}"
    base, _user = work_dir(options)
    assert job_dir == str(base / future.job_id)  # the job's own private directory, not the submit directory


#: A stand-in for ``mkdir`` on the user's PATH that pauses the first time clustrix creates a directory
#: under ``$CX_RACE_BASE``: the test's hook to win the race of issue 18 every time (mallory acts then).
MKDIR_HOOK = """#!/bin/sh
for arg; do
  case $arg in
    "$CX_RACE_BASE"*)
      if /bin/mkdir "$CX_RACE_FLAG" 2>/dev/null; then
        i=0; while [ ! -e "$CX_RACE_GO" ] && [ "$i" -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
      fi ;;
  esac
done
exec /bin/mkdir "$@"
"""


def test_a_directory_a_co_user_makes_on_the_way_while_clustrix_creates_the_work_dir_is_refused(
    slurm_cluster: Any, mallory: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mallory makes the missing parent of the new work dir (0777, hers) the moment clustrix creates it.

    The previous code checked the existing ancestor (/tmp), ran ``mkdir -p`` and then only the leaf:
    the work dir ended up inside mallory's directory, where she can rename it away and plant a venv,
    and the first submit went on to sbatch there. Now each level is made with ``mkdir -m 700``, which
    fails on hers, and nothing is written, submitted or run.
    """
    base = Path(f"/tmp/cx-race-{secrets.token_hex(4)}")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "mkdir").write_text(MKDIR_HOOK)
    (hooks / "mkdir").chmod(0o755)
    flag, go = tmp_path / "paused", tmp_path / "go"
    monkeypatch.setenv("PATH", f"{hooks}:{os.environ['PATH']}")
    monkeypatch.setenv("CX_RACE_BASE", str(base))
    monkeypatch.setenv("CX_RACE_FLAG", str(flag))
    monkeypatch.setenv("CX_RACE_GO", str(go))
    ran = mallory / "job-ran"
    made: list[Any] = []

    def attacker() -> None:
        for _ in range(1200):
            if flag.exists():
                made.append(as_mallory(f"mkdir -m 777 {base} && chmod 777 {base}"))
                break
            threading.Event().wait(0.05)
        go.touch()

    thread = threading.Thread(target=attacker, daemon=True)
    thread.start()
    options = {
        "cluster_type": "slurm",
        "remote_work_dir": str(base / "work"),
        "python_executable": sys.executable,
        "job_poll_interval": 0.2,
    }
    try:
        with pytest.raises(UnsafePathError) as caught:
            cluster(**options)(touch)(str(ran))
    finally:
        go.touch()
        thread.join(timeout=60)
        shutil.rmtree(base, ignore_errors=True)
    assert made and made[0].returncode == 0, made  # the hook paused, and mallory's directory was there first
    assert f"{base} on localhost appeared while clustrix was creating it" in str(caught.value)
    assert not ran.exists(), "the job ran"


def touch(path: str) -> None:
    """A job's function: proof that the job ran."""
    open(path, "w").close()
