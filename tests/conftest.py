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


@pytest.fixture(autouse=True)
def isolated_clustrix(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test gets its own config file location and registry, and no CLUSTRIX_* leaks in."""
    home = tmp_path_factory.mktemp("clustrix-home")
    for name in list(os.environ):
        if name.startswith("CLUSTRIX_"):
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
