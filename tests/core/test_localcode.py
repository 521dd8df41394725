"""Finding the user's own code in a payload, and shipping it through the local transport (the login-node case)."""

from __future__ import annotations

import importlib
import io
import json
import os
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from clustrix.config.settings import ClusterConfig
from clustrix.errors import LocalCodeError, UnsafePathError
from clustrix.plugin.transport import LocalTransport
from clustrix.remote.environment.activation import job_environment, pythonpath_line
from clustrix.remote.localcode import shipping
from clustrix.remote.localcode.detection import Origin, dumps_recording, imported_names, is_installed_path, locate
from clustrix.remote.localcode.plan import CodePlan, plan_code
from clustrix.remote.localcode.shipping import CODE_DIR, READY_MARKER, ShippedCode, forget_shipped
from clustrix.remote.localcode.units import archive, make_unit


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def write_package(folder: Path, name: str) -> None:
    (folder / name / "__pycache__").mkdir(parents=True)
    (folder / name / "__init__.py").write_text("from .inner import VALUE\n")
    (folder / name / "inner.py").write_text("VALUE = 7\n")
    (folder / name / "data.json").write_text("{}\n")
    (folder / name / "__pycache__" / "inner.cpython-311.pyc").write_bytes(b"stale")


def test_imports_inside_a_function_body_are_found_but_relative_ones_are_not() -> None:
    def body() -> None:
        import json.decoder  # noqa: F401
        from os import path  # noqa: F401

        from . import test_localcode  # noqa: F401  (a relative import: never followed)

    assert imported_names(body.__code__) == {"json.decoder", "os"}


def test_the_standard_library_and_installed_distributions_are_not_local() -> None:
    assert locate("json") is None
    assert locate("attrs") is None  # an installed distribution
    assert is_installed_path(json.__file__)


def test_a_local_module_named_like_a_standard_module_travels(
    local_modules: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (local_modules / "colorsys.py").write_text("SHADOWED = True\n")  # the user's file wins locally, so remotely too
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    origin = locate("colorsys")
    assert origin is not None and origin.paths == (str((local_modules / "colorsys.py").resolve()),)


def test_a_folder_pip_installed_into_with_target_is_not_local_code(local_modules: Path) -> None:
    name = unique("targeted")
    (local_modules / name).mkdir()
    (local_modules / name / "__init__.py").write_text("")
    assert locate(name) is not None  # a plain folder on sys.path: the user's code
    (local_modules / f"{name}-1.0.dist-info").mkdir()  # what pip install --target leaves next to it
    assert locate(name) is None


def test_a_package_travels_whole_with_its_data_files_and_without_caches(local_modules: Path) -> None:
    name = unique("pkg")
    write_package(local_modules, name)
    package = importlib.import_module(name)

    def uses() -> int:
        return int(package.VALUE)

    _, referenced = dumps_recording(uses)
    plan = plan_code(referenced, None, needs=())
    (unit,) = plan.units
    assert unit.name == name and unit.label == f"{name}-{unit.digest}"
    assert [arcname for arcname, _ in unit.files] == [f"{name}/__init__.py", f"{name}/data.json", f"{name}/inner.py"]
    assert plan.modules == (name,)


def test_the_archive_is_the_same_bytes_for_the_same_content(local_modules: Path) -> None:
    name = unique("pkg")
    write_package(local_modules, name)
    origin = locate(name)
    assert origin is not None
    unit = make_unit(origin, limit=10**6)
    assert archive([unit]) == archive([unit])
    with tarfile.open(fileobj=io.BytesIO(archive([unit])), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == sorted(f"{unit.label}/{arcname}" for arcname, _ in unit.files)


def test_bad_configuration_for_local_code_is_named() -> None:
    from clustrix.config.settings import resolve_config
    from clustrix.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="max_module_size='lots' is not valid"):
        resolve_config(overrides={"max_module_size": "lots"})
    with pytest.raises(LocalCodeError, match="ship_modules lists 'json', which is not a local module"):
        plan_code([], {"ship_modules": ["json"]}, needs=())


def test_shipping_through_the_local_transport_sends_each_content_once(local_modules: Path, tmp_path: Path) -> None:
    stable, changing = unique("stable"), unique("changing")
    (local_modules / f"{stable}.py").write_text("A = 1\n")
    (local_modules / f"{changing}.py").write_text(f"import {stable}\nB = 2\n")
    config = ClusterConfig({"remote_work_dir": str(tmp_path / "work")})
    transport = LocalTransport()

    def ship() -> ShippedCode:
        module = importlib.import_module(changing)
        _, referenced = dumps_recording(lambda: module.B)
        plan = plan_code(referenced, config, needs=())
        return shipping.ship(transport, config, plan, python=sys.executable)

    first = ship()
    assert {label.rsplit("-", 1)[0] for label in first.sent} == {stable, changing}
    assert first.prelude == (pythonpath_line(first.paths),)
    assert all(Path(path, READY_MARKER).is_file() for path in first.paths)
    assert ship().sent == ()  # remembered in this process: no command
    forget_shipped()  # as a new process would
    again = ship()
    assert again.sent == () and set(again.reused) == set(first.sent)  # the remote side had them

    (local_modules / f"{changing}.py").write_text(f"import {stable}\nB = 3\n")
    del sys.modules[changing]
    changed = ship()
    (sent,) = changed.sent
    assert sent.startswith(changing) and sent not in first.sent
    assert {label for label in changed.reused if label.startswith(stable)} == {
        label for label in first.sent if label.startswith(stable)
    }


def test_a_module_that_reads_an_environment_variable_at_import_is_checked_with_the_jobs_values(
    local_modules: Path, tmp_path: Path
) -> None:
    # the variables' values are in a private file the job sources, which does not exist when the code is
    # checked: the check's script (on stdin) exports them in the same place of the prelude instead
    name, variable = unique("needs_env"), unique("CLUSTRIX_TEST_TOKEN").upper()
    value = "it's $(x) `y`"
    (local_modules / f"{name}.py").write_text(f"import os\nassert os.environ[{variable!r}] == {value!r}\n")
    assert variable not in os.environ
    config = ClusterConfig({"remote_work_dir": str(tmp_path / "work"), "environment_variables": {variable: value}})
    env = job_environment(config, sys.executable)
    plan = CodePlan(units=(make_unit(locate(name) or _missing(name), limit=10**6),), modules=(name,))
    with pytest.raises(LocalCodeError, match=rf"{name}.*does not import.*KeyError: '{variable}'"):
        shipping.ship(LocalTransport(), config, plan, python=sys.executable, prelude=env.prelude)  # without them
    forget_shipped()
    shipped = shipping.ship(LocalTransport(), config, plan, python=sys.executable, prelude=env.check_prelude())
    assert [label.rsplit("-", 1)[0] for label in shipped.reused] == [name]  # sent by the refused attempt
    assert all(variable not in line for line in env.prelude)  # the job's own prelude still holds no value


def _missing(name: str) -> Origin:
    raise AssertionError(f"{name} is not found as local code")


def test_a_code_dir_other_users_can_write_is_refused(local_modules: Path, tmp_path: Path) -> None:
    name = unique("mod")
    (local_modules / f"{name}.py").write_text("A = 1\n")
    module = importlib.import_module(name)
    work = tmp_path / "work"
    (work / CODE_DIR).mkdir(parents=True)
    (work / CODE_DIR).chmod(0o777)
    config = ClusterConfig({"remote_work_dir": str(work)})
    _, referenced = dumps_recording(lambda: module.A)
    plan = plan_code(referenced, config, needs=())
    with pytest.raises(UnsafePathError, match=r"code on localhost is writable by other users"):
        shipping.ship(LocalTransport(), config, plan, python=sys.executable)
    assert list((work / CODE_DIR).iterdir()) == []


def test_clustrix_code_lists_what_a_function_would_ship_without_submitting(
    local_modules: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from clustrix.cli.app import main

    helper, driver = unique("helper"), unique("driver")
    (local_modules / f"{helper}.py").write_text("def twice(x):\n    return 2 * x\n")
    (local_modules / f"{driver}.py").write_text(
        f"from clustrix import cluster\nfrom {helper} import twice\n\n\n@cluster\ndef run(x):\n    return twice(x)\n"
    )
    assert main(["code", f"{driver}:run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [unit["name"] for unit in report["units"]] == [helper]  # run itself travels inside the payload
    assert report["modules"] == [helper]
    assert main(["code", "no-colon"]) == 1
    assert "use MODULE:FUNCTION" in capsys.readouterr().err
