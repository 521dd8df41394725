"""Fixtures shared by every test folder: an isolated configuration and job registry."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import clustrix.config.settings
import clustrix.plugin.manager
from tests.testbed.cousers import mallory  # noqa: F401 - the co-user fixture of the attack tests


def pytest_configure(config: pytest.Config) -> None:
    # test modules decorate functions at import time, before any fixture runs
    os.environ["CLUSTRIX_DISABLE_PLUGINS"] = "broken"


#: The session fixture that brings a testbed up -> the testbed. Checked before the markers: the
#: Torque-style CLI in tests/pbs drives the SLURM testbed, not OpenPBS.
TESTBED_FIXTURES = {
    "torque_cli": "slurm",
    "slurm_cluster": "slurm",
    "pbs_complex": "pbs",
    "sge_cell": "sge",
    "kube": "k8s",
}
#: Test folders whose every test drives that folder's testbed.
TESTBED_FOLDERS = {"slurm", "pbs", "sge", "k8s"}
#: Conformance targets whose scheduler is a testbed of its own (ssh needs only a per-test sshd).
CONFORMANCE_TESTBEDS = {"slurm", "pbs", "sge", "tsp"}


def testbed_of(item: pytest.Item) -> str | None:
    """The testbed a test drives, or None when it needs none (or only an sshd of its own)."""
    names = set(getattr(item, "fixturenames", ()))
    for fixture, bed in TESTBED_FIXTURES.items():
        if fixture in names:
            return bed
    callspec = getattr(item, "callspec", None)
    target = callspec.params.get("target") if callspec is not None else None
    if isinstance(target, tuple) and target and target[0] in CONFORMANCE_TESTBEDS:
        return str(target[0])
    folder = item.path.relative_to(item.config.rootpath).parts[1:2]
    if folder and folder[0] in TESTBED_FOLDERS:
        return folder[0]
    for marker in item.iter_markers():
        if marker.name.startswith("testbed_") and marker.name != "testbed_ssh":
            return marker.name.removeprefix("testbed_")
    return None


def pytest_itemcollected(item: pytest.Item) -> None:
    """Under pytest-xdist (``--dist loadgroup``), every test of one testbed runs in the same worker,
    one after the other as before, while the testbeds run side by side: most of their time is spent
    waiting on daemons. A testbed's tests restart its daemons, so two workers must never share one.
    (Marked as each test is collected: xdist reads the groups in its own pytest_collection_modifyitems.)"""
    if not hasattr(item.config, "workerinput"):  # only an xdist worker runs tests by group
        return
    bed = testbed_of(item)
    if bed is not None:
        item.add_marker(pytest.mark.xdist_group(bed))


@pytest.fixture(autouse=True)
def isolated_clustrix(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test gets its own config file location and registry, and no CLUSTRIX_* leaks in."""
    home = tmp_path_factory.mktemp("clustrix-home")
    for name in list(os.environ):
        if name.startswith("CLUSTRIX_") and name != "CLUSTRIX_UPDATE_GOLDEN":  # that one tells the tests, not clustrix
            monkeypatch.delenv(name)
    monkeypatch.setenv("CLUSTRIX_CONFIG", str(home / "config.toml"))
    monkeypatch.setenv("CLUSTRIX_DATA_DIR", str(home / "data"))
    # the test plugin distribution ships a deliberately broken plugin; only its own test loads it
    monkeypatch.setenv("CLUSTRIX_DISABLE_PLUGINS", "broken")
    clustrix.plugin.manager.reset_plugins()
    clustrix.config.settings.reset_config()
    yield home
    clustrix.config.settings.reset_config()
    clustrix.plugin.manager.reset_plugins()


@pytest.fixture
def pickle_test_module_by_value(request: pytest.FixtureRequest) -> Iterator[None]:
    """Jobs cannot import test modules (pytest names them by file), so ship the module's functions whole.

    Scheduler test folders use it from an autouse fixture of their conftest.
    """
    import cloudpickle

    module = request.module
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)


@pytest.fixture
def local_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path for the user's own top-level modules, which exist only on this machine."""
    folder = tmp_path / "user-modules"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder
