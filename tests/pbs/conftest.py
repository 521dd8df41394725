"""Fixtures for the PBS tests: the real OpenPBS in its namespace (local and SSH), the Torque-style CLI."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.testbed import openpbs, torque
from tests.testbed.system import unavailable


@pytest.fixture(scope="session")
def pbs_complex() -> openpbs.OpenPBS:
    """OpenPBS, built once per tarball and started once per session (or reused when healthy)."""
    try:
        bed = openpbs.start()
    except Exception as exc:
        unavailable(f"OpenPBS testbed: {type(exc).__name__}: {exc}")
        raise
    sys.stderr.write(
        f"\n[openpbs testbed] {'reused' if bed.reused else 'started'} in {bed.bring_up_seconds:.1f} s "
        f"(build {bed.built_seconds:.0f} s)\n"
    )
    return bed


@pytest.fixture(scope="session")
def pbs_job_python(pbs_complex: openpbs.OpenPBS) -> str:
    return openpbs.job_python()


@pytest.fixture(scope="session")
def pbs_ssh(pbs_complex: openpbs.OpenPBS) -> Iterator[openpbs.NetnsSSH]:
    """An sshd inside the namespace, reached through its gateway on 127.0.0.1."""
    try:
        server = openpbs.start_ssh(pbs_complex)
    except Exception as exc:
        unavailable(f"sshd in the OpenPBS namespace: {type(exc).__name__}: {exc}")
        raise
    yield server
    server.stop()


@pytest.fixture
def pbs_plugins(pbs_complex: openpbs.OpenPBS) -> Iterator[None]:
    """Fresh plugins (the test-only clustrix-openpbs-netns reaches the namespace as the job user)."""
    from clustrix.plugin.manager import reset_plugins

    reset_plugins()
    yield
    reset_plugins()


@pytest.fixture(params=("local", "ssh"))
def pbs_options(
    request: pytest.FixtureRequest, pbs_plugins: None, pbs_job_python: str, tmp_path: Any, monkeypatch: Any
) -> Iterator[dict[str, Any]]:
    """``@cluster`` options for OpenPBS: on the login node itself (in the namespace) or over SSH."""
    from clustrix import reset_config

    monkeypatch.setenv("CLUSTRIX_DATA_DIR", str(tmp_path / "registry"))
    reset_config()
    common = {"job_poll_interval": 0.2, "python_executable": pbs_job_python, "remote_work_dir": "~/.clustrix/pbs-tests"}
    if request.param == "local":
        options = {"cluster_type": "pbs", "cluster_host": openpbs.NETNS_HOST, **common}
    else:
        server: openpbs.NetnsSSH = request.getfixturevalue("pbs_ssh")
        options = server.config(**common)
    yield options
    reset_config()


@pytest.fixture
def pbs_local(pbs_plugins: None, pbs_job_python: str, tmp_path: Any, monkeypatch: Any) -> Iterator[dict[str, Any]]:
    """``@cluster`` options for OpenPBS on the login node (the tests that run once)."""
    from clustrix import reset_config

    monkeypatch.setenv("CLUSTRIX_DATA_DIR", str(tmp_path / "registry"))
    reset_config()
    yield {
        "cluster_type": "pbs",
        "cluster_host": openpbs.NETNS_HOST,
        "job_poll_interval": 0.2,
        "python_executable": pbs_job_python,
        "remote_work_dir": "~/.clustrix/pbs-tests",
    }
    reset_config()


@pytest.fixture(scope="session")
def torque_cli() -> torque.TorqueCLI:
    try:
        return torque.start()
    except Exception as exc:
        unavailable(f"Torque-style CLI (slurm-wlm-torque over the SLURM testbed): {type(exc).__name__}: {exc}")
        raise


@pytest.fixture(autouse=True)
def _pickle_test_functions_by_value(request: pytest.FixtureRequest) -> Iterator[None]:
    """Jobs cannot import test modules (pytest names them by file), so ship their functions whole."""
    import cloudpickle

    module = request.module
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)
