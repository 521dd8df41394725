"""Secrets stay out of reprs and the registry; values that become script lines hold no line break."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clustrix import cluster, configure, get_config, registry
from clustrix.config.settings import resolve_config
from clustrix.errors import ConfigurationError
from clustrix.plugin.transport import LocalTransport
from clustrix.plugin.types import JobHandle, JobSpec
from clustrix.remote import scripts as remote_script
from clustrix.remote.jobdir import decode_outcome

SECRET = "s3cret-Tok3n"


def test_the_repr_of_a_configuration_shows_no_password_and_no_variable_value() -> None:
    configure(password=SECRET, environment_variables={"API_TOKEN": SECRET + "-env"})
    config = get_config()
    spec = JobSpec(name="f", func=print, arguments=[((), {})], config=config)
    for text in (repr(config), str(config), repr(spec)):
        assert SECRET not in text
        assert "API_TOKEN" in text and "password" in text  # the names are still there to debug with
    assert config.password == SECRET  # the value itself is unchanged


def test_the_registry_stores_variable_names_but_no_values_and_no_password(isolated_clustrix: Path) -> None:
    configure(password=SECRET, environment_variables={"API_TOKEN": SECRET + "-env"})
    spec = JobSpec(name="f", func=print, arguments=[((), {})], config=get_config())
    registry.record(spec, JobHandle(job_id=spec.job_id, scheduler="ssh"))
    stored = registry.get(spec.job_id).config
    assert stored["environment_variable_names"] == ["API_TOKEN"]
    assert "environment_variables" not in stored and "password" not in stored
    for path in (isolated_clustrix / "data").iterdir():  # the database and its WAL, byte for byte
        assert SECRET.encode() not in path.read_bytes(), path.name


SINGLE_LINE = {
    "remote_work_dir": "/scratch/me\n#SBATCH --uid=0",
    "python_executable": "python3\ntouch /tmp/x",
    "conda_env_name": "env\nrm -rf ~",
    "default_partition": "debug\n#SBATCH --qos=high",
    "default_queue": "debug\r#PBS -q x",
    "cluster_host": "host\nx",
    "module_loads": ["gcc\nid"],
    "pre_execution_commands": ["ok", "first\nsecond"],
}


@pytest.mark.parametrize("key", sorted(SINGLE_LINE))
def test_a_value_with_a_line_break_is_refused_when_configured(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    value: Any = SINGLE_LINE[key]
    with pytest.raises(ConfigurationError, match=rf"{key}.*line break"):
        configure(**{key: value})
    with pytest.raises(ConfigurationError, match=rf"{key}.*line break"):
        resolve_config(overrides={key: value})
    if isinstance(value, str):
        monkeypatch.setenv(f"CLUSTRIX_{key.upper()}", value)
        with pytest.raises(ConfigurationError, match=rf"{key}.*line break"):
            get_config()


@pytest.mark.parametrize("keyword", ["partition", "queue"])
def test_a_partition_or_queue_with_a_line_break_is_refused_at_decoration(keyword: str) -> None:
    with pytest.raises(ValueError, match=rf"{keyword}=.*single-line"):
        cluster(**{keyword: "debug\n#SBATCH --uid=0"})(print)


@pytest.mark.parametrize("data", [b"not a pickle", pickle.dumps(["a", "list"])], ids=["garbage", "not-a-record"])
def test_an_outcome_file_that_is_no_outcome_record_fails_its_call_once_instead_of_failing_the_fetch(
    data: bytes,
) -> None:
    outcome = decode_outcome(data)
    assert not outcome.ok
    assert outcome.error_message is not None and "the outcome file could not be read" in outcome.error_message


def _check(work: Path, *subdirs: Path) -> Exception | None:
    """Run the remote work-dir check on this machine; the refusal it reports, or None."""
    script = remote_script.CHECK_FUNCTIONS + "\n".join(
        remote_script.render_work_dir_check(str(work), [str(d) for d in subdirs])
    )
    result = remote_script.run_script(LocalTransport(), script)
    error = remote_script.unsafe_from_stderr(result.stderr, "localhost")
    assert (error is None) == result.ok, result.stderr
    return error


def test_a_missing_work_dir_is_created_0700_under_a_sticky_shared_parent(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    assert _check(shared / "me" / "work", shared / "me" / "work" / "envs") is None
    for path in (shared / "me", shared / "me" / "work", shared / "me" / "work" / "envs"):
        assert path.stat().st_mode & 0o777 == 0o700, path


def test_a_work_dir_below_a_parent_others_can_write_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # not sticky: anyone may rename what is inside
    error = _check(shared / "work")
    assert error is not None and f"{shared} on localhost is on the way to the work directory" in str(error)
    assert not (shared / "work").exists()


def test_a_work_dir_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    error = _check(tmp_path / "link")
    assert error is not None and "is a symbolic link" in str(error)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root (CI runs as root)")
def test_a_planted_envs_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    (work / "envs").mkdir(mode=0o700)
    os.chown(work / "envs", 65534, 65534)
    error = _check(work, work / "envs")
    assert error is not None and f"{work / 'envs'} on localhost belongs to another user" in str(error)


def test_doctor_imports_nothing_from_the_directory_it_is_run_in(mallory: Path, tmp_path: Path) -> None:
    """``clustrix doctor`` run from a folder mallory can write: her cloudpickle.py and clustrix/ never load.

    doctor's Python probe (``python -c``, with the job's modules when python_executable is set) ran
    in the caller's directory, first on ``sys.path``; now it runs in the checked work dir with the
    current directory off ``sys.path``.
    """
    from tests.testbed.cousers import MALLORY, ids

    canary = mallory / "ran"
    for name in ("cloudpickle.py", "clustrix/__init__.py", "clustrix/remote/runner.py"):
        path = mallory / name
        path.parent.mkdir(mode=0o777, exist_ok=True)
        path.write_text(f"open({str(canary)!r}, 'a').write({name!r} + chr(10))\n")
        os.chown(path, *ids(MALLORY))
    work = tmp_path / "w"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("clustrix")), "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=mallory,
        env={**os.environ, "CLUSTRIX_REMOTE_WORK_DIR": str(work), "CLUSTRIX_PYTHON_EXECUTABLE": sys.executable},
    )
    ran = canary.read_text() if canary.exists() else ""
    assert ran == "", f"mallory's modules ran as the user: {ran.split()}"
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["remote python"]["ok"], checks
    assert checks["remote work dir"]["detail"] == f"{work} (created, mode 700)"
    assert work.stat().st_mode & 0o777 == 0o700


#: A stand-in for ``uv`` on PATH: records the configuration it would read and where it runs, then fails.
UV_SHIM = """#!/bin/sh
printf 'UV_NO_CONFIG=%s\\nUV_CONFIG_FILE=%s\\nPWD=%s\\n' \\
  "${UV_NO_CONFIG-}" "${UV_CONFIG_FILE-}" "$(pwd -P)" > "$CX_UV_RECORD"
exit 1
"""


@pytest.mark.parametrize("own_config", [False, True])
def test_uv_reads_no_configuration_from_where_it_runs_only_the_users_own(tmp_path: Path, own_config: bool) -> None:
    """uv reads ``uv.toml``/``pyproject.toml`` from its directory and every parent (``/tmp`` for a work dir there).

    A co-user's file there could point the venv build at her index; clustrix's build tells uv to
    read no configuration file (``UV_NO_CONFIG``), or only the user's own ``~/.config/uv/uv.toml``.
    """
    from clustrix.remote.environment.venv import render_build_script

    bin_dir, home, record = tmp_path / "bin", tmp_path / "home", tmp_path / "uv-record"
    bin_dir.mkdir()
    (bin_dir / "uv").write_text(UV_SHIM)
    (bin_dir / "uv").chmod(0o755)
    user_config = home / ".config" / "uv" / "uv.toml"
    if own_config:
        user_config.parent.mkdir(parents=True)
        user_config.write_text("# the user's own\n")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "uv.toml").write_text('index-url = "http://127.0.0.1:9/planted"\n')  # what mallory leaves
    (shared / "pyproject.toml").write_text('[tool.uv]\nindex-url = "http://127.0.0.1:9/planted"\n')
    work = shared / "work"
    script = render_build_script(work_dir=str(work), key="k", requirement_lines=["attrs"], python_version=None)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("UV_", "XDG_CONFIG"))},
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(home),
        "CX_UV_RECORD": str(record),
    }
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, cwd=shared, timeout=60)
    assert "build-failed" in result.stderr, result.stderr  # the shim ran, as the build's uv
    seen = dict(line.split("=", 1) for line in record.read_text().splitlines())
    if own_config:
        assert seen["UV_CONFIG_FILE"] == str(user_config) and seen["UV_NO_CONFIG"] == "", seen
    else:
        assert seen["UV_NO_CONFIG"] == "1" and seen["UV_CONFIG_FILE"] == "", seen
    assert seen["PWD"] == str(work.resolve()), seen  # in the checked work dir, not the caller's
