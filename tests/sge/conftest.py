"""Fixtures for the Grid Engine tests: the real single-node cell, the sshd testbed, both transports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.testbed import fixtures
from tests.testbed import sge as sge_testbed
from tests.testbed.sshd import SSHServer

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="session")
def sge_cell() -> sge_testbed.SGETestbed:
    """The testbed cell, started once per session (or reused when healthy and configured by this version)."""
    return fixtures.started("SGE", sge_testbed.start)


@pytest.fixture(scope="session")
def sge_sshd(sge_cell: sge_testbed.SGETestbed) -> Iterator[SSHServer]:
    """The real sshd on 127.0.0.1, logging in as the unprivileged clustrix-test (who may submit to SGE)."""
    yield from fixtures.sshd_session(sge_testbed.TEST_USER)


TRANSPORTS = fixtures.TRANSPORTS
REPLICATE = fixtures.REPLICATE


@pytest.fixture(params=TRANSPORTS)
def transport_options(
    request: pytest.FixtureRequest, tmp_path: Path, sge_cell: sge_testbed.SGETestbed
) -> dict[str, Any]:
    """Configuration keys that reach SGE locally (submit host) or over the real sshd (from a laptop)."""
    options = fixtures.transport_options(
        request, tmp_path, sshd_fixture="sge_sshd", remote_work_dir="~/.clustrix/sge-tests"
    )
    return {"cluster_type": "sge", **options}


@pytest.fixture(autouse=True)
def _pickle_test_functions_by_value(pickle_test_module_by_value: None) -> None:
    """Every test module here ships its functions to jobs by value (see tests/conftest.py)."""
