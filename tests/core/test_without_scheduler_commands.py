"""A batch scheduler whose commands are missing on the target (the tsp test plugin: any dialect works alike)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.login_node import check_missing_commands


def test_doctor_and_a_submit_without_the_schedulers_command_name_it_and_leave_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("clustrix_tsp", reason="the tsp test plugin is installed in tests-all, not tests-core")
    check_missing_commands("tsp", ["tsp"], tmp_path, monkeypatch, missing="tsp")
