"""The ``clustrix`` command, run as users run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from clustrix import cluster


def clustrix(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clustrix.cli", *args], capture_output=True, text=True, timeout=120)


def test_plugins_lists_schedulers_with_distribution_and_version() -> None:
    result = clustrix("plugins", "--json")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["local"]["distribution"] == "clustrix-core"
    assert plugins["local"]["version"] == "0.1.0"
    assert plugins["local"]["schedulers"] == ["local"]


def test_config_show_prints_resolved_values_without_secrets(isolated_clustrix: Path) -> None:
    (isolated_clustrix / "config.toml").write_text('job_poll_interval = 9\npassword = "s3cret"\n')
    result = clustrix("config", "show", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["values"]["job_poll_interval"] == 9
    assert "password" not in data["values"]
    assert "s3cret" not in result.stdout


def test_unknown_key_in_the_config_file_is_reported_by_name(isolated_clustrix: Path) -> None:
    (isolated_clustrix / "config.toml").write_text('cluster_tpye = "slurm"\n')
    result = clustrix("config", "show")
    assert result.returncode == 1
    assert "unknown configuration key 'cluster_tpye'" in result.stderr


def test_jobs_status_logs_result_of_a_finished_job(tmp_path: Path) -> None:
    @cluster(cluster_type="subprocess", remote_work_dir=str(tmp_path))
    def shout(word: str) -> str:
        print("working on", word)
        return word.upper()

    future = shout.submit("hello")
    assert future.result(timeout=60) == "HELLO"
    jobs = json.loads(clustrix("jobs", "--json").stdout)
    assert [j["job_id"] for j in jobs] == [future.job_id]
    assert jobs[0]["state"] == "COMPLETED"
    status = json.loads(clustrix("status", future.job_id, "--json").stdout)
    assert status["state"] == "COMPLETED"
    assert "working on hello" in clustrix("logs", future.job_id).stdout
    assert json.loads(clustrix("result", future.job_id, "--json").stdout)["result"] == "HELLO"


def test_unknown_job_is_a_clear_error() -> None:
    result = clustrix("status", "no-such-job")
    assert result.returncode == 1
    assert "no job 'no-such-job' in the registry" in result.stderr


def test_doctor_checks_the_local_setup(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clustrix.cli", "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "CLUSTRIX_REMOTE_WORK_DIR": str(tmp_path / "w")},
    )
    data = json.loads(result.stdout)
    assert data["ok"], data
    assert {c["check"] for c in data["checks"]} >= {"configuration", "remote python", "remote work dir"}


def _doctor_work_dir_check(work_dir: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``clustrix doctor --json`` run as a program with ``remote_work_dir`` set, and its work-dir check."""
    result = subprocess.run(
        [sys.executable, "-m", "clustrix.cli", "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CLUSTRIX_REMOTE_WORK_DIR": str(work_dir)},
    )
    (work,) = [c for c in json.loads(result.stdout)["checks"] if c["check"] == "remote work dir"]
    return result, work


def test_doctor_reports_a_work_dir_others_can_reach_and_leaves_its_mode_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    result, work = _doctor_work_dir_check(shared)
    assert not work["ok"] and "mode 755" in work["detail"] and "chmod 700" in work["detail"]
    assert result.returncode == 1
    assert shared.stat().st_mode & 0o777 == 0o755  # reported, not silently changed


def test_doctor_says_a_work_dir_that_is_a_file_is_not_a_directory(tmp_path: Path) -> None:
    regular = tmp_path / "clustrix-work"
    regular.write_text("not a folder\n")
    regular.chmod(0o644)
    result, work = _doctor_work_dir_check(regular)
    assert not work["ok"]
    assert f"{regular} is a file, not a directory" in work["detail"]
    assert "mv " in work["detail"] and "chmod" not in work["detail"]
    assert result.returncode == 1


def test_doctor_fails_on_an_unknown_key_in_a_profile_not_selected(isolated_clustrix: Path) -> None:
    (isolated_clustrix / "config.toml").write_text('[profiles.spare]\nclustr_host = "login"\n')
    result = subprocess.run(
        [_installed_clustrix(), "doctor"], capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )
    assert result.returncode == 1
    assert "[FAIL] configuration:" in result.stdout
    assert "'clustr_host' in [profiles.spare]" in result.stdout and "line 2" in result.stdout
    assert "did you mean 'cluster_host'" in result.stdout


# -- issue 19, row 8: the command behaves as pip and git do --------------------------------------


def _installed_clustrix() -> str:
    """The ``clustrix`` script installed next to this Python (the console entry point users run)."""
    script = Path(sys.executable).parent / "clustrix"
    assert script.exists(), f"no clustrix script next to {sys.executable}"
    return str(script)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=os.environ.copy())


def test_python_dash_m_clustrix_runs_the_command() -> None:
    result = _run([sys.executable, "-m", "clustrix", "plugins"])
    assert result.returncode == 0, result.stderr
    assert "local" in result.stdout
    usage = _run([sys.executable, "-m", "clustrix", "--help"])
    assert usage.returncode == 0 and usage.stdout.startswith("usage: python -m clustrix ")


def test_version_prints_clustrix_core_and_each_installed_plugin() -> None:
    import importlib.metadata

    from clustrix.plugin.manager import installed_plugins

    for argv in ([_installed_clustrix(), "--version"], [sys.executable, "-m", "clustrix", "--version"]):
        result = _run(argv)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith(f"clustrix-core {importlib.metadata.version('clustrix-core')} (Python ")
        for info in installed_plugins():
            if info.distribution and info.distribution != "clustrix-core":
                assert f"{info.distribution} {info.version}" in lines


def test_bare_clustrix_prints_help_and_exits_0() -> None:
    result = _run([_installed_clustrix()])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: clustrix ")
    for command in ("config", "plugins", "jobs", "status", "logs", "result", "cancel", "doctor", "code", "submit"):
        assert f"    {command} " in result.stdout
    assert result.stderr == ""
    group = _run([_installed_clustrix(), "config"])
    assert group.returncode == 0 and group.stdout.startswith("usage: clustrix config ") and "show" in group.stdout


def _big_config(folder: Path) -> Path:
    """A config whose ``config show`` output is far larger than a pipe's buffer, so the reader leaves first."""
    path = folder / "config.toml"
    commands = ", ".join(f'"echo {"x" * 100} {i}"' for i in range(3000))
    path.write_text(f"pre_execution_commands = [{commands}]\n")
    return path


def test_a_reader_that_closes_the_pipe_early_gets_no_error(isolated_clustrix: Path) -> None:
    _big_config(isolated_clustrix)
    for command in (f'"{_installed_clustrix()}"', f'"{sys.executable}" -m clustrix'):
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", f"{command} config show | head -1"],
            capture_output=True,
            text=True,
            timeout=120,
            env=os.environ.copy(),
        )
        assert result.stdout == f"# config file: {isolated_clustrix / 'config.toml'}\n"
        assert result.stderr == "", result.stderr
        assert result.returncode == 141  # as a command ended by SIGPIPE (git log | head -1)


def test_every_option_argument_and_command_has_help_text() -> None:
    import argparse

    from clustrix.cli.app import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help for choice in action._choices_actions}
                for name, sub in action.choices.items():
                    if not helps.get(name):
                        missing.append(f"{path} {name}")
                    walk(sub, f"{path} {name}")
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "clustrix")
    assert not missing, f"without help text: {missing}"
