"""The user's own code travels with the call on the real SLURM testbed, on the login node and over SSH."""

from __future__ import annotations

import importlib
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from clustrix import cluster
from clustrix.config.settings import resolve_config
from clustrix.errors import LocalCodeError
from clustrix.plugin.manager import get_scheduler
from clustrix.plugin.types import JobSpec
from tests.localcode_projects import editable_install, labels, run_and_change, run_main, write_project
from tests.slurm.conftest import REPLICATE
from tests.testbed.sshd import SSHServer

pytestmark = pytest.mark.testbed_slurm


@pytest.fixture
def slurm_options(slurm_cluster: Any, transport_options: dict[str, Any]) -> dict[str, Any]:
    return {"cluster_type": "slurm", "job_poll_interval": 0.2, **transport_options}


def test_a_two_file_project_runs_as_sbatch_jobs_and_a_changed_module_is_shipped_alone(
    slurm_options: dict[str, Any], tmp_path: Path
) -> None:
    first, changed = run_and_change(write_project(tmp_path / "project"), slurm_options)
    (sent,) = labels(changed, "sent")
    assert sent.startswith("mylib-") and sent not in labels(first, "sent")


def test_an_editable_install_runs_in_a_slurm_job_with_its_dependency(
    slurm_cluster: Any, sshd: SSHServer, tmp_path: Path
) -> None:
    python, driver = editable_install(tmp_path)
    options = sshd.config(
        cluster_type="slurm",
        replicate_distributions=[*REPLICATE, "myproj"],
        remote_work_dir="~/.clustrix/slurm-tests",
        job_poll_interval=0.2,
    )
    result, _ = run_main(driver, options, python=str(python))
    assert result["sorted"] == [[1, 2, 3], "1.2.3"]


def test_a_local_module_that_does_not_import_on_the_login_node_is_refused_before_sbatch(
    slurm_cluster: Any, sshd: SSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"needs_dep_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("import sortedcontainers\n\n\ndef size(items):\n    return len(items)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    config = resolve_config(
        overrides=sshd.config(
            cluster_type="slurm", replicate_distributions=REPLICATE, remote_work_dir="~/.clustrix/slurm-tests"
        )
    )

    def uses_dependency() -> int:
        return module.size([1, 2])

    spec = JobSpec(name="uses_dependency", func=uses_dependency, arguments=[((), {})], config=config)
    refused = rf"local module '{name}' .* does not import with the remote Python"
    with pytest.raises(LocalCodeError, match=refused) as err:
        get_scheduler("slurm").submit(spec, wake=lambda: None)
    assert "No module named 'sortedcontainers'" in str(err.value)
    assert sshd.run_as_user(f"test -e ~/.clustrix/slurm-tests/{spec.job_id}").returncode != 0  # no job dir, no sbatch
    del sys.modules[name]


def test_a_local_module_that_needs_an_environment_variable_at_import_is_checked_and_runs_with_it(
    slurm_options: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the values reach the job in its private variables file, which does not exist yet when the shipped code's
    # import is checked before sbatch: that check's script (on stdin) exports them in the same place instead
    name, variable, value = f"needs_env_{uuid.uuid4().hex[:8]}", "CLUSTRIX_TEST_TOKEN", "it's $(remote) `value`"
    (tmp_path / f"{name}.py").write_text(f"import os\n\nTOKEN = os.environ[{variable!r}]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(variable, "local")
    module = importlib.import_module(name)  # imports here with this machine's value, which the job must not see
    monkeypatch.delenv(variable)
    assert variable not in os.environ

    def token() -> str:
        return str(module.TOKEN)

    try:
        assert cluster(**slurm_options, environment_variables={variable: value})(token)() == value
    finally:
        del sys.modules[name]
