"""Each scheduler's dependency options (``Dialect.dependency_options``), rendered from the dependencies.

The plugins are imported where installed (tests-all); the end-to-end behaviour against the real
schedulers is in tests/conformance/test_dependencies.py.
"""

from __future__ import annotations

import pytest

from clustrix.batch.dialect import ScriptJob
from clustrix.config.resources import Resources
from clustrix.plugin.types import Dependency


def job(*after: Dependency) -> ScriptJob:
    return ScriptJob(
        job_id="20250101-000000-abcdefabcdef",
        name="f",
        job_dir="/w/j",
        n_tasks=4,
        n_calls=4,
        resources=Resources(),
        python="/py",
        runner_path="/w/j/clustrix_runner.py",
        after=after,
    )


WHOLE = Dependency(job_id="a", native_id="12", job_dir="/w/a")
EACH = Dependency(job_id="b", native_id="13", job_dir="/w/b", size=4, tasks=4, elementwise=True)


def test_slurm_holds_with_afterok_and_aftercorr_and_kills_on_an_invalid_dependency() -> None:
    dialect = pytest.importorskip("clustrix_slurm.dialect").SlurmDialect()
    assert dialect.dependency_options(job(WHOLE)) == ["--dependency=afterok:12", "--kill-on-invalid-dep=yes"]
    assert dialect.dependency_options(job(WHOLE, EACH)) == [
        "--dependency=afterok:12,aftercorr:13",
        "--kill-on-invalid-dep=yes",
    ]


def test_pbs_holds_whole_jobs_with_depend_afterok_and_torque_arrays_with_afterokarray() -> None:
    dialects = pytest.importorskip("clustrix_pbs.dialect")
    array = Dependency(job_id="c", native_id="14[].server", job_dir="/w/c", size=4, tasks=4)
    plain = Dependency(job_id="d", native_id="15.server", job_dir="/w/d")
    assert dialects.PBSProDialect().dependency_options(job(plain, array)) == [
        "-W",
        "depend=afterok:15.server:14[].server",
    ]
    assert dialects.TorqueDialect().dependency_options(job(plain, array)) == [
        "-W",
        "depend=afterok:15.server,afterokarray:14[].server",
    ]


def test_sge_holds_with_hold_jid_and_task_by_task_with_hold_jid_ad() -> None:
    dialect = pytest.importorskip("clustrix_sge.dialect").SGEDialect()
    assert dialect.dependency_options(job(WHOLE, EACH)) == ["-hold_jid", "12", "-hold_jid_ad", "13"]


def test_the_reference_plugin_holds_with_tsp_d_on_the_newest_input() -> None:
    dialect = pytest.importorskip("clustrix_tsp").TspDialect()
    newer = Dependency(job_id="e", native_id="9", job_dir="/w/e")
    older = Dependency(job_id="f", native_id="8", job_dir="/w/f")
    assert dialect.dependency_options(job(older, newer)) == ["-D", "9"]


def test_the_plain_ssh_backend_adds_no_option_and_its_runner_waits_for_the_inputs() -> None:
    dialect = pytest.importorskip("clustrix_ssh.dialect").SSHDialect()
    assert dialect.dependency_options(job(WHOLE)) == []
    assert "export CLUSTRIX_INPUTS_WAIT=1" in dialect.render_script(job(WHOLE))
    assert "CLUSTRIX_INPUTS_WAIT" not in dialect.render_script(job())


def test_an_upstream_leaves_the_queue_without_failing_its_dependants_slurm_after_releasing_them() -> None:
    slurm = pytest.importorskip("clustrix_slurm.dialect").SlurmDialect()
    assert slurm.release_argv("12") == ["scontrol", "update", "JobId=12", "Dependency="]
    assert not slurm.sweep_releases_dependants  # a cancelled task fails afterok/aftercorr
    sge = pytest.importorskip("clustrix_sge.dialect").SGEDialect()
    assert sge.sweep_releases_dependants  # a deleted task releases -hold_jid/-hold_jid_ad
    pbs = pytest.importorskip("clustrix_pbs.dialect").PBSProDialect()
    assert pbs.release_argv("12.server") is None and not pbs.sweep_releases_dependants
