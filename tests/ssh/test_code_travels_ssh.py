"""The user's own code travels with the call to the real sshd host: modules, packages, editable installs.

``main.py`` runs as a real program, so ``mylib`` is a real top-level module of the user's
project folder, unknown on the remote side until clustrix ships it.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from clustrix.errors import LocalCodeError
from clustrix.plugin.types import JobSpec
from clustrix.remote.localcode.detection import dumps_recording
from clustrix.remote.localcode.plan import plan_code
from tests.localcode_projects import (
    MAIN_JOBS,
    data_package,
    editable_install,
    extension_module,
    labels,
    local_module,
    run_main,
    set_factor,
    write_project,
)
from tests.ssh.helpers import REPLICATE, config_for, scheduler, submit
from tests.testbed.sshd import SSHServer

pytestmark = pytest.mark.testbed_ssh
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def project_runs(sshd: SSHServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The project run three times by three processes: first, unchanged, with ``mylib.py`` changed."""
    folder = write_project(tmp_path_factory.mktemp("user") / "project")
    options = sshd.config(replicate_distributions=REPLICATE, job_poll_interval=0.2)
    first = run_main(folder, options)
    again = run_main(folder, options)
    set_factor(folder, 100)
    changed = run_main(folder, options)
    return {"first": first, "again": again, "changed": changed}


def test_a_two_file_project_runs_remotely_with_no_configuration(project_runs: dict[str, Any]) -> None:
    result, events = project_runs["first"]
    assert result["run"] == 41
    assert result["map"] == [1, 11, 21]
    assert result["decorated_after_import"] == 40  # cluster(mylib.helper) applied after the import
    assert len(events) == MAIN_JOBS  # one shipment per job: the map's three calls share one


def test_a_package_with_relative_imports_reads_its_data_file_remotely(project_runs: dict[str, Any]) -> None:
    result, _ = project_runs["first"]
    assert result["greet"].startswith("hello from mypkg ")


def test_a_local_class_travels_as_argument_and_result(project_runs: dict[str, Any]) -> None:
    result, _ = project_runs["first"]
    assert result["moved"] == [True, 4]  # the caller gets an instance of its own mylib.Point back


def test_an_unchanged_project_is_not_sent_again_and_a_changed_module_is(project_runs: dict[str, Any]) -> None:
    _, first = project_runs["first"]
    _, again = project_runs["again"]
    changed_result, changed = project_runs["changed"]
    sent_first = labels(first, "sent")
    assert {label.split("-")[0] for label in sent_first} >= {"mylib", "mypkg"}
    assert labels(again, "sent") == set()  # a new process, the same content: nothing sent
    assert labels(again, "reused") >= sent_first
    assert changed_result["run"] == 401  # helper now multiplies by 100
    (new_mylib,) = labels(changed, "sent")  # only the changed module, under its new hash
    assert new_mylib.startswith("mylib-") and new_mylib not in sent_first
    assert {label for label in labels(changed, "reused") if label.startswith("mypkg-")} == {
        label for label in sent_first if label.startswith("mypkg-")
    }


def test_an_editable_install_travels_as_source_and_its_dependency_is_installed(sshd: SSHServer, tmp_path: Path) -> None:
    python, driver = editable_install(tmp_path)
    options = sshd.config(replicate_distributions=[*REPLICATE, "myproj"], job_poll_interval=0.2)
    result, events = run_main(driver, options, python=str(python))
    assert result["sorted"] == [[1, 2, 3], "1.2.3"]  # sortedcontainers came from the index, myproj as source
    assert any(label.startswith("myproj-") for label in labels(events, "sent") | labels(events, "reused"))


# -- refusals: each before the job is submitted, naming the module and the fix ------------------


def test_a_compiled_extension_is_refused_before_anything_is_submitted(
    ssh_config: dict[str, Any], sshd: SSHServer, local_modules: Path
) -> None:
    name, fast = extension_module(local_modules, "fastmod")

    def uses_extension() -> str:
        return fast.__name__

    config = config_for(ssh_config, remote_work_dir="~/refused-extension")
    with pytest.raises(LocalCodeError, match=rf"module '{name}' is local code with a compiled extension") as caught:
        submit(config, uses_extension)
    assert f"exclude_modules=['{name}']" in str(caught.value)
    assert sshd.run_as_user("test -e ~/refused-extension").returncode != 0  # nothing reached the remote side


def test_a_module_over_max_module_size_is_refused_before_anything_is_submitted(
    ssh_config: dict[str, Any], sshd: SSHServer, local_modules: Path
) -> None:
    name, big = data_package(local_modules, "bigpkg", b"\0" * 1_500_000)

    def uses_big() -> int:
        return big.VALUE

    config = config_for(ssh_config, remote_work_dir="~/refused-size", max_module_size="1MB")
    with pytest.raises(LocalCodeError, match=rf"local module '{name}' .* is 1\.5 MB, over max_module_size=1\.0 MB"):
        submit(config, uses_big)
    assert sshd.run_as_user("test -e ~/refused-size").returncode != 0


def test_a_module_that_does_not_import_remotely_is_refused_naming_it_and_the_fix(
    ssh_config: dict[str, Any], sshd: SSHServer, local_modules: Path
) -> None:
    source = "import sortedcontainers\n\n\ndef size(items):\n    return len(items)\n"
    name, module = local_module(local_modules, "needs_dep", source)

    def uses_dependency() -> int:
        return module.size([1, 2])

    config = config_for(ssh_config)  # the remote venv holds clustrix-core's closure: no sortedcontainers
    spec = JobSpec(name="uses_dependency", func=uses_dependency, arguments=[((), {})], config=config)
    refused = rf"local module '{name}' .* does not import with the remote Python"
    with pytest.raises(LocalCodeError, match=refused) as err:
        scheduler().submit(spec, wake=lambda: None)
    assert "No module named 'sortedcontainers'" in str(err.value)
    assert "replicate_distributions" in str(err.value) and f"exclude_modules=['{name}']" in str(err.value)
    assert sshd.run_as_user(f"test -e ~/.clustrix/{spec.job_id}").returncode != 0  # no job was started


def test_the_plan_names_what_travels_and_leaves_installed_and_excluded_modules_home(local_modules: Path) -> None:
    (local_modules / "plain_local.py").write_text("X = 1\n")
    (local_modules / "other_local.py").write_text("import plain_local\nY = 2\n")
    other = importlib.import_module("other_local")

    def uses_it() -> int:
        import json  # the standard library never travels

        return other.Y + len(json.dumps(cloudpickle.__name__))  # nor installed distributions

    _, referenced = dumps_recording(uses_it)
    plan = plan_code(referenced, None, needs=())
    assert [unit.name for unit in plan.units] == ["other_local", "plain_local"]  # plain_local: imported by other
    assert plan.modules == ("other_local",)
    excluded = plan_code(referenced, {"exclude_modules": ["plain_local"]}, needs=())
    assert [unit.name for unit in excluded.units] == ["other_local"]
