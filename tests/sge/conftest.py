"""Fixtures for the Grid Engine tests: the real single-node cell, the sshd testbed, both transports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.testbed import fixtures
from tests.testbed import sge as sge_testbed

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = Path(__file__).parent / "golden"


#: ``sge_cell``: the cell (reused when healthy and configured by this version); ``sge_sshd``: the real sshd
sge_cell, sge_sshd = fixtures.testbed_fixtures("sge_cell", "sge_sshd", "SGE", sge_testbed.start, sge_testbed.TEST_USER)


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
