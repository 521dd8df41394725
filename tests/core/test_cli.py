"""The ``clustrix`` command, run as users run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def test_doctor_reports_a_work_dir_others_can_reach_and_leaves_its_mode_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    result = subprocess.run(
        [sys.executable, "-m", "clustrix.cli", "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CLUSTRIX_REMOTE_WORK_DIR": str(shared)},
    )
    data = json.loads(result.stdout)
    (work,) = [c for c in data["checks"] if c["check"] == "remote work dir"]
    assert not work["ok"] and "mode 755" in work["detail"] and "chmod 700" in work["detail"]
    assert result.returncode == 1
    assert shared.stat().st_mode & 0o777 == 0o755  # reported, not silently changed
