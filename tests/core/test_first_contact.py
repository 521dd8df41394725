"""What a new user meets first: typos, bad values, broken files, failed results, the README's own example."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import clustrix
from clustrix import cluster, configure, registry
from clustrix.config.settings import get_config
from clustrix.errors import ConfigurationError, StateFileError
from clustrix.plugin.transport import LocalTransport
from clustrix.remote.environment.prepare import prepare_remote_environment

ROOT = Path(__file__).resolve().parents[2]


def clustrix_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clustrix.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("clustrix: error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ---- typos never run ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typo", "meant"), [("corse", "cores"), ("memroy", "memory"), ("cluster_tpye", "cluster_type")]
)
def test_a_misspelt_cluster_keyword_is_refused_at_decoration_with_a_suggestion(typo: str, meant: str) -> None:
    with pytest.raises(ValueError, match=rf"unknown keyword {typo}=.*did you mean '{meant}'\?"):

        @cluster(**{typo: 4})
        def f() -> None: ...


def test_executor_keywords_are_checked_like_cluster_keywords() -> None:
    with pytest.raises(ValueError, match=r"unknown keyword corse=.*did you mean 'cores'\?"):
        clustrix.Executor(corse=2)


def test_a_keyword_an_installed_plugin_declares_reaches_the_scheduler() -> None:
    @cluster(testsched_priority=7)  # declared by the test plugin's clustrix_resource_keys
    def f() -> None: ...

    assert f.resources.extra == {"testsched_priority": 7}


def test_a_keyword_no_installed_plugin_declares_is_refused_naming_the_declared_ones() -> None:
    declared = r"unknown keyword licence_server='flexlm'.*declared now: .*testsched_priority"
    with pytest.raises(ValueError, match=declared):
        cluster(licence_server="flexlm")


@pytest.mark.parametrize("parameter", ["time", "memory", "cores"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), True])
def test_nan_inf_and_bool_resources_are_refused_by_name(parameter: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"^{parameter}="):
        cluster(**{parameter: value})


def test_a_generator_function_is_refused_at_decoration_with_the_fix() -> None:
    def numbers(n: int) -> Any:
        yield from range(n)

    with pytest.raises(TypeError, match=r"generator function .*numbers.*Return a list"):
        cluster(numbers)


def test_an_async_function_is_refused_at_decoration_with_the_fix() -> None:
    async def fetch() -> int:
        return 1

    with pytest.raises(TypeError, match=r"coroutine function .*asyncio.run"):
        cluster(cores=1)(fetch)


def test_an_unpicklable_argument_is_named() -> None:
    @cluster(executor="process")
    def locked(n: int, guard: Any) -> int:
        return n

    with pytest.raises(TypeError, match=r"argument 'guard' \(position 1\) of call 0 .*cannot pickle '_thread.lock'"):
        locked(1, threading.Lock())
    with pytest.raises(TypeError, match=r"argument 'guard' of call 0"):
        locked(1, guard=threading.Lock())


# ---- scheduler names ----------------------------------------------------------------------------


def test_configure_with_a_misspelt_scheduler_suggests_the_installed_one_not_a_package() -> None:
    with pytest.raises(ConfigurationError) as caught:
        configure(cluster_type="subproces")
    assert "did you mean 'subprocess'?" in str(caught.value)
    assert "pip install" not in str(caught.value)


# ---- config and registry files --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"profiles = 3\n", "must be tables like [profiles.hpc]"),
        (b"\xff\xfe\x00garbage\x80\x81", "is not UTF-8 text"),
        (b"cluster_type = \n", "is not valid TOML"),
    ],
)
def test_a_broken_config_file_is_one_line_naming_the_path_and_the_fix(
    isolated_clustrix: Path, content: bytes, problem: str
) -> None:
    path = isolated_clustrix / "config.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError, match=re.escape(problem)) as caught:
        get_config()
    assert str(path) in str(caught.value) and "CLUSTRIX_CONFIG" in str(caught.value)
    assert_one_line_error(clustrix_cli("config", "show"), str(path), problem)


def test_a_config_path_that_is_a_folder_is_one_line(isolated_clustrix: Path) -> None:
    (isolated_clustrix / "config.toml").mkdir()
    assert_one_line_error(clustrix_cli("config", "show"), str(isolated_clustrix / "config.toml"), "cannot be read")


def test_a_data_dir_that_is_a_file_is_one_line_naming_it(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("")
    env = {"CLUSTRIX_DATA_DIR": str(not_a_dir)}
    assert_one_line_error(clustrix_cli("jobs", "--json", env=env), f"CLUSTRIX_DATA_DIR {not_a_dir}")
    doctor = json.loads(clustrix_cli("doctor", "--json", env=env).stdout)
    (check,) = [c for c in doctor["checks"] if c["check"] == "job registry"]
    assert not check["ok"] and str(not_a_dir) in check["detail"]


def _record_one_job() -> None:
    @cluster(cluster_type="subprocess", remote_work_dir=str(registry.data_dir() / "work"))
    def one() -> int:
        return 1

    assert one() == 1


@pytest.mark.parametrize("damage", ["garbage", "half", "empty"])
def test_a_damaged_registry_is_one_line_with_the_fix_and_doctor_reports_it(damage: str) -> None:
    _record_one_job()
    path = registry.database_path()
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "half":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"")
    for command in (["jobs"], ["jobs", "--json"], ["status", "anything"]):
        assert_one_line_error(clustrix_cli(*command), str(path), f"mv {path} {path}.damaged")
    doctor = clustrix_cli("doctor", "--json")
    assert doctor.returncode == 1
    (check,) = [c for c in json.loads(doctor.stdout)["checks"] if c["check"] == "job registry"]
    assert not check["ok"] and str(path) in check["detail"]
    with pytest.raises(StateFileError):
        registry.list_jobs()
    assert path.stat().st_size == (len(data) // 2 if damage == "half" else len(data) if damage == "garbage" else 0)


def test_verbose_shows_the_traceback_of_an_error() -> None:
    registry.database_path().parent.mkdir(parents=True)
    registry.database_path().write_bytes(b"not a database at all, just text" * 100)
    result = clustrix_cli("-v", "jobs")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "clustrix: error:" in result.stderr


def test_a_registry_row_that_cannot_be_read_is_reported_and_the_others_still_listed() -> None:
    _record_one_job()
    _record_one_job()
    with sqlite3.connect(registry.database_path()) as conn:
        conn.execute("UPDATE jobs SET handle = 'not json' WHERE rowid = (SELECT MIN(rowid) FROM jobs)")
    with pytest.warns(registry.RegistryWarning, match="cannot be read and is not listed"):
        records = registry.list_jobs()
    assert len(records) == 1
    with pytest.raises(ValueError):
        registry.check()


def test_doctor_reports_a_healthy_registry_with_its_job_count() -> None:
    _record_one_job()
    doctor = json.loads(clustrix_cli("doctor", "--json").stdout)
    (check,) = [c for c in doctor["checks"] if c["check"] == "job registry"]
    assert check["ok"] and "(1 jobs)" in check["detail"]


# ---- clustrix result of a failed job --------------------------------------------------------------


@pytest.mark.parametrize("error", [ValueError, RuntimeError])
def test_result_of_a_failed_job_prints_type_message_and_remote_traceback(tmp_path: Path, error: type) -> None:
    @cluster(cluster_type="subprocess", remote_work_dir=str(tmp_path))
    def explode() -> None:
        raise error("boom")

    future = explode.submit()
    with pytest.raises(error):
        future.result(timeout=60)
    result = clustrix_cli("result", future.job_id)
    assert result.returncode == 1
    assert f"{error.__name__}: boom" in result.stderr
    assert "remote traceback:" in result.stderr and "in explode" in result.stderr
    assert "clustrix/cli/" not in result.stderr  # no traceback of clustrix itself
    data = json.loads(clustrix_cli("result", future.job_id, "--json").stdout)
    assert data["failed"][0]["type"] == error.__name__ and data["failed"][0]["message"] == "boom"


# ---- python_executable and doctor ------------------------------------------------------------------


def test_a_tilde_in_python_executable_is_expanded_on_the_remote_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / "venvs" / "sim" / "bin").mkdir(parents=True)
    wrapper = home / "venvs" / "sim" / "bin" / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("HOME", str(home))
    configure(python_executable="~/venvs/sim/bin/python")
    prepared = prepare_remote_environment(LocalTransport(), get_config(), {})
    assert prepared.python == str(home / "venvs" / "sim" / "bin" / "python")


def test_doctor_checks_that_python_executable_can_import_clustrix_where_jobs_need_it(tmp_path: Path) -> None:
    # a Python that imports cloudpickle but not clustrix: site-packages off, a stand-in cloudpickle on its path
    (tmp_path / "cloudpickle.py").write_text("")
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH={tmp_path} exec {sys.executable} -S "$@"\n')
    python.chmod(0o755)
    env = {
        "CLUSTRIX_CLUSTER_TYPE": "subprocess",  # its jobs run python -m clustrix.remote.runner, as the ssh backend's do
        "CLUSTRIX_PYTHON_EXECUTABLE": str(python),
        "CLUSTRIX_REMOTE_WORK_DIR": str(tmp_path / "w"),
    }
    doctor = clustrix_cli("doctor", "--json", env=env)
    (check,) = [c for c in json.loads(doctor.stdout)["checks"] if c["check"] == "remote python"]
    assert not check["ok"] and "No module named 'clustrix'" in check["detail"], check
    assert doctor.returncode == 1


# ---- the README's own example ----------------------------------------------------------------------


def test_the_readme_example_runs_as_written_on_the_local_executor() -> None:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S)
    assert block is not None
    # the configure() line points at a cluster that does not exist here: the local executor runs the rest
    code = "\n".join(line for line in block.group(1).splitlines() if not line.startswith("configure("))
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # the README's own example
    assert namespace["fut"].result(timeout=60) is None
