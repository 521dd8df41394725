"""cluster_type="slurm" on a machine without SLURM's commands: doctor says so, a submit leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.login_node import check_doctor_finds_commands, check_missing_commands


def test_doctor_and_a_submit_without_slurm_commands_name_the_missing_one_and_leave_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = ["sbatch", "squeue", "scancel", "scontrol", "srun", "sacct"]
    check_missing_commands("slurm", commands, tmp_path, monkeypatch, missing="sbatch")


@pytest.mark.testbed_slurm
def test_doctor_on_a_slurm_login_node_shows_the_commands_and_the_site_query(tmp_path: Path, slurm_cluster) -> None:
    line = check_doctor_finds_commands("slurm", tmp_path, ["sbatch", "squeue", "scancel", "scontrol"])
    assert "scontrol show config: arrays up to" in line, line
