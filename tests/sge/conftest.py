"""Fixtures for the Grid Engine tests: the real single-node cell, the sshd testbed, both transports."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.testbed import sge as sge_testbed
from tests.testbed.sshd import SSHServer, start_sshd
from tests.testbed.system import start_or_unavailable

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="session")
def sge_cell() -> sge_testbed.SGETestbed:
    """The testbed cell, started once per session (or reused when healthy and configured by this version)."""
    bed = start_or_unavailable("SGE testbed", sge_testbed.start)
    sys.stderr.write(f"\n[sge testbed] {'reused' if bed.reused else 'started'} in {bed.bring_up_seconds:.2f} s\n")
    return bed


@pytest.fixture(scope="session")
def sge_sshd(sge_cell: sge_testbed.SGETestbed) -> Iterator[SSHServer]:
    """The real sshd on 127.0.0.1, logging in as the unprivileged clustrix-test (who may submit to SGE)."""
    server = start_or_unavailable("sshd testbed", lambda: start_sshd(sge_testbed.TEST_USER))
    yield server
    server.cleanup()


#: The transports every key end-to-end test runs through.
TRANSPORTS = ("local", "ssh")
#: Over SSH the job runs in a venv the submit host builds once per environment hash; clustrix-core's
#: closure is enough (the remote python3 is Debian's).
REPLICATE = ["clustrix-core"]


@pytest.fixture(params=TRANSPORTS)
def transport_options(
    request: pytest.FixtureRequest, tmp_path: Path, sge_cell: sge_testbed.SGETestbed
) -> dict[str, Any]:
    """Configuration keys that reach SGE locally (submit host) or over the real sshd (from a laptop)."""
    if request.param == "local":
        work = tmp_path / "jobs"
        work.mkdir(mode=0o700)
        return {"cluster_type": "sge", "remote_work_dir": str(work), "python_executable": sys.executable}
    server: SSHServer = request.getfixturevalue("sge_sshd")
    options = server.config(replicate_distributions=REPLICATE, remote_work_dir="~/.clustrix/sge-tests")
    options["cluster_type"] = "sge"
    return options


@pytest.fixture(autouse=True)
def _pickle_test_functions_by_value(pickle_test_module_by_value: None) -> None:
    """Every test module here ships its functions to jobs by value (see tests/conftest.py)."""
