"""cluster_type="sge" on a machine without SGE's commands: doctor says so, a submit leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.login_node import check_doctor_finds_commands, check_missing_commands
from tests.testbed import sge as sge_testbed


def test_doctor_and_a_submit_without_sge_commands_name_the_missing_one_and_leave_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    check_missing_commands("sge", ["qsub", "qstat", "qdel", "qacct", "qconf"], tmp_path, monkeypatch, missing="qsub")


@pytest.mark.testbed_sge
def test_doctor_on_an_sge_login_node_shows_the_commands_and_the_site_query(tmp_path: Path, sge_cell) -> None:
    line = check_doctor_finds_commands("sge", tmp_path, ["qsub", "qstat", "qdel", "qacct", "qconf"], **sge_testbed.ENV)
    assert "qconf -sconf: arrays up to" in line, line
