"""Fixtures for the SLURM tests: the real single-node cluster and a clean plugin/config state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.testbed import fixtures
from tests.testbed import slurm as slurm_testbed

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = Path(__file__).parent / "golden"


#: ``slurm_cluster``: the cluster (reused when healthy); ``sshd``: the real sshd as clustrix-test
slurm_cluster, sshd = fixtures.testbed_fixtures(
    "slurm_cluster",
    "sshd",
    "SLURM",
    slurm_testbed.start,
    slurm_testbed.TEST_USER,
    lambda bed: f" (cgroups={bed.cgroups}, accounting={bed.accounting})",
)


TRANSPORTS = fixtures.TRANSPORTS
REPLICATE = fixtures.REPLICATE


@pytest.fixture(params=TRANSPORTS)
def transport_options(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Configuration keys that reach SLURM locally (login node) or over the real sshd (from a laptop).

    Each test module sets ``cluster_type="slurm"`` itself.
    """
    return fixtures.transport_options(request, tmp_path, sshd_fixture="sshd", remote_work_dir="~/.clustrix/slurm-tests")


@pytest.fixture
def fresh_plugins() -> Iterator[None]:
    from clustrix.plugin.manager import reset_plugins

    reset_plugins()
    yield
    reset_plugins()


@pytest.fixture(autouse=True)
def _pickle_test_functions_by_value(pickle_test_module_by_value: None) -> None:
    """Every test module here ships its functions to jobs by value (see tests/conftest.py)."""
