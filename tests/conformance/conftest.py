"""The conformance suite's fixtures: every (scheduler, transport) found in ``targets/``.

Each module ``targets/<scheduler>.py`` defines ``SCHEDULER``, ``TRANSPORTS`` and a
session fixture ``conformance_<SCHEDULER>`` returning a factory ``transport -> Target``
(see README.md). This file imports their fixtures, so pytest sees them, and parametrizes
the ``target`` fixture over every pair.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.target import Target
from tests.testbed.slurm import TEST_USER
from tests.testbed.sshd import SSHServer, start_sshd
from tests.testbed.system import unavailable

TARGET_DIR = Path(__file__).parent / "targets"
PAIRS: list[tuple[str, str]] = []

for _info in sorted(pkgutil.iter_modules([str(TARGET_DIR)]), key=lambda m: m.name):
    _module = importlib.import_module(f"tests.conformance.targets.{_info.name}")
    for _name in dir(_module):
        if _name.startswith("conformance_"):
            globals()[_name] = getattr(_module, _name)  # pytest collects fixtures from this namespace
    PAIRS.extend((_module.SCHEDULER, transport) for transport in _module.TRANSPORTS)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" in metafunc.fixturenames:
        metafunc.parametrize("target", PAIRS, ids=[f"{s}-{t}" for s, t in PAIRS], indirect=True)


@pytest.fixture(scope="session")
def conformance_sshd() -> Iterator[SSHServer]:
    """The real sshd on 127.0.0.1, logging in as the unprivileged clustrix-test (shared by every target)."""
    try:
        server = start_sshd(TEST_USER)
    except Exception as exc:
        unavailable(f"sshd testbed: {type(exc).__name__}: {exc}")
        raise
    yield server
    server.cleanup()


@pytest.fixture
def target(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    """One (scheduler, transport), with a fresh registry and configuration for the test."""
    from clustrix import reset_config
    from clustrix.plugin.manager import reset_plugins

    scheduler, transport = request.param
    make = request.getfixturevalue(f"conformance_{scheduler}")
    monkeypatch.setenv("CLUSTRIX_DATA_DIR", str(tmp_path / "registry"))
    reset_plugins()
    reset_config()
    yield make(transport)
    reset_config()
    reset_plugins()


@pytest.fixture(autouse=True)
def _pickle_test_functions_by_value(request: pytest.FixtureRequest) -> Iterator[None]:
    """Jobs cannot import test modules (pytest names them by file), so ship their functions whole."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(request.module)
    yield
    cloudpickle.unregister_pickle_by_value(request.module)
