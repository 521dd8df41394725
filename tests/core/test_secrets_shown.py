"""Secret values are never printed: dry runs, ``clustrix submit --dry-run`` and ``clustrix config show``.

docs/security.md recommends ``environment_variables`` for secrets and docs/hooks.md says a
dry run never shows one: wherever the configuration or a job is shown, the names stay and
each value is replaced by its size (``<set, 12 bytes>``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from clustrix import cluster

SECRET = "s3cr3t-t0ken"  # 12 bytes
SHOWN = "<set, 12 bytes>"

#: cluster_type -> (its plugin's module, the keys a dry run of it needs)
DRY_RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "slurm": ("clustrix_slurm", {}),
    "pbs": ("clustrix_pbs", {}),
    "sge": ("clustrix_sge", {}),
    "tsp": ("clustrix_tsp", {"tsp_socket": "/tmp/clustrix-dry-run.socket"}),
    "ssh": ("clustrix_ssh", {"cluster_host": "login.example.invalid"}),
}


def add(a: int, b: int) -> int:
    return a + b


def clustrix(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clustrix.cli", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("cluster_type", sorted(DRY_RUNS))
def test_a_dry_run_names_the_environment_variables_and_shows_no_value(cluster_type: str, tmp_path: Path) -> None:
    module, keys = DRY_RUNS[cluster_type]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    options = {"cluster_type": cluster_type, "remote_work_dir": str(tmp_path), "python_executable": "python3", **keys}
    fn = cluster(**options, environment_variables={"API_TOKEN": SECRET})(add)
    for shown in (fn.job_script(1, 2), fn.job_script.map([1, 2], [3, 4])):
        text, data = str(shown), json.dumps(shown.to_dict())
        assert SECRET not in text and SECRET not in data
        assert f"API_TOKEN={SHOWN}" in text  # named, with its size
        assert "variables.sh" in str(shown.script)  # the job sources the private file that holds the values


@pytest.fixture
def secret_config(isolated_clustrix: Path) -> Path:
    if importlib.util.find_spec("clustrix_sge") is None:
        pytest.skip("clustrix_sge is not installed")
    (isolated_clustrix / "config.toml").write_text(
        textwrap.dedent(
            f"""
            cluster_type = "sge"
            python_executable = "python3"
            [environment_variables]
            API_TOKEN = "{SECRET}"
            """
        )
    )
    return isolated_clustrix


def test_config_show_names_environment_variables_with_their_sizes_only(secret_config: Path) -> None:
    text = clustrix("config", "show")
    assert text.returncode == 0, text.stderr
    assert SECRET not in text.stdout and "API_TOKEN" in text.stdout and SHOWN in text.stdout
    shown = clustrix("config", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    assert SECRET not in shown.stdout
    assert json.loads(shown.stdout)["values"]["environment_variables"] == {"API_TOKEN": SHOWN}


def test_cli_submit_dry_run_shows_no_environment_variable_value(
    secret_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "secret_target.py").write_text("from clustrix import cluster\n\n@cluster\ndef f(x):\n    return x\n")
    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--json"]):
        result = subprocess.run(
            [sys.executable, "-m", "clustrix.cli", "submit", "--dry-run", "secret_target:f", "1", *extra],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(tmp_path)},
        )
        assert result.returncode == 0, result.stderr
        assert SECRET not in result.stdout + result.stderr
        assert "API_TOKEN" in result.stdout and SHOWN in result.stdout
