"""cluster_type="pbs" on a machine without PBS's commands: doctor says so, a submit leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.login_node import check_missing_commands


def test_doctor_and_a_submit_without_pbs_commands_name_the_missing_one_and_leave_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_missing_commands("pbs", ["qsub", "qstat", "qdel"], tmp_path, monkeypatch, missing="qsub")
