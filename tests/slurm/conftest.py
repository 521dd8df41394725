"""Fixtures for the SLURM tests: the real single-node cluster and a clean plugin/config state."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testbed import slurm as slurm_testbed
from tests.testbed.system import unavailable

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="session")
def slurm_cluster() -> slurm_testbed.SlurmTestbed:
    """The testbed cluster, started once per session (or reused when already healthy)."""
    try:
        bed = slurm_testbed.start()
    except Exception as exc:
        unavailable(f"SLURM testbed: {type(exc).__name__}: {exc}")
        raise
    sys.stderr.write(
        f"\n[slurm testbed] {'reused' if bed.reused else 'started'} in {bed.bring_up_seconds:.2f} s "
        f"(cgroups={bed.cgroups}, accounting={bed.accounting})\n"
    )
    return bed


@pytest.fixture
def fresh_plugins() -> Iterator[None]:
    from clustrix.plugins import reset_plugins

    reset_plugins()
    yield
    reset_plugins()


@pytest.fixture(autouse=True)
def _pickle_test_functions_by_value(request: pytest.FixtureRequest) -> Iterator[None]:
    """Jobs cannot import test modules (pytest names them by file), so ship their functions whole."""
    import cloudpickle

    module = request.module
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)
