"""The bodies of the fixtures every batch-scheduler test folder has (tests/slurm, tests/sge).

A session fixture that brings a testbed up (and says whether it was reused), the sshd
testbed logging in as the unprivileged test user, and the configuration keys of the two
transports every key end-to-end test runs through: ``local`` (the login node, this
process's Python) and ``ssh`` (the real sshd, a venv the login node builds with
``replicate`` only).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.testbed.sshd import SSHServer, start_sshd
from tests.testbed.system import start_or_unavailable

#: The transports every key end-to-end test runs through.
TRANSPORTS = ("local", "ssh")
#: Over SSH the job runs in a venv the login node builds once per environment hash; clustrix-core's
#: closure is enough (the remote python3 is Debian's, whose patch level the whole dev venv does not fit).
REPLICATE = ["clustrix-core"]

T = TypeVar("T")


def started(label: str, start: Callable[[], T], details: Callable[[T], str] = lambda _bed: "") -> T:
    """``start()`` a testbed (fail in CI, skip elsewhere when it cannot) and say how long it took."""
    bed = start_or_unavailable(f"{label} testbed", start)
    how = "reused" if getattr(bed, "reused", False) else "started"
    sys.stderr.write(
        f"\n[{label.lower()} testbed] {how} in {getattr(bed, 'bring_up_seconds', 0.0):.2f} s{details(bed)}\n"
    )
    return bed


def sshd_session(user: str) -> Iterator[SSHServer]:
    """The real sshd on 127.0.0.1 logging in as ``user``, for one session."""
    server = start_or_unavailable("sshd testbed", lambda: start_sshd(user))
    yield server
    server.cleanup()


def testbed_fixtures(
    bed: str, sshd: str, label: str, start: Callable[[], T], user: str, details: Callable[[T], str] = lambda _: ""
) -> tuple[Any, Any]:
    """Two session fixtures for a conftest: ``bed`` brings the testbed up (:func:`started`), ``sshd``
    is the real sshd logging in as ``user`` (:func:`sshd_session`), started after the testbed."""

    def bring_up() -> T:
        return started(label, start, details)

    def server(request: pytest.FixtureRequest) -> Iterator[SSHServer]:
        request.getfixturevalue(bed)
        yield from sshd_session(user)

    bring_up.__doc__ = f"The {label} testbed, started once per session (or reused when healthy)."
    server.__doc__ = f"The real sshd on 127.0.0.1, logging in as {user} (who may submit to {label})."
    return pytest.fixture(scope="session", name=bed)(bring_up), pytest.fixture(scope="session", name=sshd)(server)


def transport_options(
    request: pytest.FixtureRequest, tmp_path: Path, *, sshd_fixture: str, remote_work_dir: str
) -> dict[str, Any]:
    """Configuration keys (no ``cluster_type``) that reach the scheduler locally or over the real sshd."""
    if request.param == "local":
        work = tmp_path / "jobs"
        work.mkdir(mode=0o700)
        return {"remote_work_dir": str(work), "python_executable": sys.executable}
    server: SSHServer = request.getfixturevalue(sshd_fixture)
    options = server.config(replicate_distributions=REPLICATE, remote_work_dir=remote_work_dir)
    del options["cluster_type"]
    return options
