"""Fixtures for the SLURM tests: the real single-node cluster and a clean plugin/config state."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.testbed import slurm as slurm_testbed
from tests.testbed.sshd import SSHServer, start_sshd
from tests.testbed.system import start_or_unavailable

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="session")
def slurm_cluster() -> slurm_testbed.SlurmTestbed:
    """The testbed cluster, started once per session (or reused when already healthy)."""
    bed = start_or_unavailable("SLURM testbed", slurm_testbed.start)
    sys.stderr.write(
        f"\n[slurm testbed] {'reused' if bed.reused else 'started'} in {bed.bring_up_seconds:.2f} s "
        f"(cgroups={bed.cgroups}, accounting={bed.accounting})\n"
    )
    return bed


@pytest.fixture(scope="session")
def sshd(slurm_cluster: slurm_testbed.SlurmTestbed) -> Iterator[SSHServer]:
    """The real sshd on 127.0.0.1, logging in as the unprivileged clustrix-test (who may submit to SLURM)."""
    server = start_or_unavailable("sshd testbed", lambda: start_sshd(slurm_testbed.TEST_USER))
    yield server
    server.cleanup()


#: The transports every key end-to-end test runs through.
TRANSPORTS = ("local", "ssh")
#: Over SSH the job runs in a venv the login node builds once per environment hash; clustrix-core's
#: closure is enough (the remote python3 is Debian's, whose patch level the whole dev venv does not fit).
REPLICATE = ["clustrix-core"]


@pytest.fixture(params=TRANSPORTS)
def transport_options(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Configuration keys that reach SLURM locally (login node) or over the real sshd (from a laptop)."""
    if request.param == "local":
        return {"remote_work_dir": str(tmp_path / "jobs"), "python_executable": sys.executable}
    server: SSHServer = request.getfixturevalue("sshd")
    options = server.config(
        replicate_distributions=REPLICATE,
        remote_work_dir="~/.clustrix/slurm-tests",  # one venv for the session; job dirs are unique
    )
    del options["cluster_type"]  # each test module sets cluster_type="slurm" itself
    return options


@pytest.fixture
def fresh_plugins() -> Iterator[None]:
    from clustrix.plugins import reset_plugins

    reset_plugins()
    yield
    reset_plugins()


@pytest.fixture(autouse=True)
def _pickle_test_functions_by_value(pickle_test_module_by_value: None) -> None:
    """Every test module here ships its functions to jobs by value (see tests/conftest.py)."""
