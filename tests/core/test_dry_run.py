"""Dry runs in core: the batch engine shows what it would submit, and a real submit stages exactly that."""

from __future__ import annotations

import json
import shlex
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from clustrix import cluster, registry
from clustrix.batch.dialect import Dialect, ScriptJob, TaskRecord
from clustrix.batch.engine import BatchScheduler
from clustrix.batch.submit import RUNNER_NAME
from clustrix.cli.app import main
from clustrix.config.resources import Resources
from clustrix.config.settings import resolve_config
from clustrix.errors import ConfigurationError, ParseError
from clustrix.plugin.dryrun import REMOTE_HOME
from clustrix.plugin.types import JobSpec


class CopyDialect(Dialect):
    """A scheduler whose 'submit' keeps a copy of the script it got and prints a job id: nothing runs."""

    name = "copy"
    label = "Copy"
    task_index_variable = "COPY_TASK"
    extras = {"account": "the account charged"}

    def directives(self, job: ScriptJob) -> list[str]:
        lines = [f"#COPY --name={shlex.quote(self.job_name(job))}", f"#COPY --tasks={job.n_tasks}"]
        if job.resources.cores:
            lines.append(f"#COPY --cores={job.resources.cores}")
        return lines

    def command_environment(self, config: Any) -> Mapping[str, str]:
        return {"COPY_SITE": str(config.get("cluster_port") or "default")}

    def submit_argv(self, script_path: str, job: ScriptJob) -> list[str]:
        return ["sh", "-c", 'cp -- "$0" submitted-copy.sh && echo 42', script_path]

    def parse_submit(self, stdout: str) -> str:
        if stdout.strip() != "42":
            raise ParseError(stdout)
        return "42"

    def status_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["true"]

    def parse_status(self, stdout: str) -> list[TaskRecord]:
        return []  # nothing runs: the queue knows no job

    def cancel_argv(self, native_id: str) -> list[str]:
        return ["true"]

    def log_name(self, native_id: str, task: int, stream: str) -> str:
        return stream


def add(x: int, y: int = 0) -> int:
    return x + y


def spec_for(work_dir: Path, calls: list[tuple[Any, ...]], **options: Any) -> JobSpec:
    config = resolve_config(
        overrides={"remote_work_dir": str(work_dir), "python_executable": sys.executable, **options.pop("config", {})}
    )
    return JobSpec(
        name="add",
        func=add,
        arguments=[(args, {}) for args in calls],
        resources=Resources.parse(**options),
        config=config,
    )


def test_a_dialect_on_the_engine_dry_runs_exactly_the_script_and_command_its_real_submit_stages(
    tmp_path: Path,
) -> None:
    work = tmp_path / "jobs"
    spec = spec_for(work, [(1,), (2,), (3,)], cores=2)
    scheduler = BatchScheduler(CopyDialect())
    shown = scheduler.clustrix_dry_run(spec)
    assert not work.exists()  # a dry run writes nothing, not even the work dir
    handle = scheduler.clustrix_submit(spec, wake=lambda: None)
    job_dir = Path(str(handle.job_dir))
    staged = (job_dir / "job.sh").read_text()
    assert shown.script == staged == (job_dir / "submitted-copy.sh").read_text()
    assert shown.script_path == str(job_dir / "job.sh")
    assert shown.commands == (
        f"cd {job_dir}",
        f"env COPY_SITE=22 sh -c 'cp -- \"$0\" submitted-copy.sh && echo 42' {job_dir / 'job.sh'}",
    )
    assert "#COPY --cores=2" in staged and "#COPY --tasks=3" in staged
    assert f"{sys.executable} {job_dir / RUNNER_NAME} {job_dir}" in staged
    assert (shown.calls, shown.tasks) == (3, 3)


def test_a_dry_run_refuses_a_bad_request_with_the_error_a_submit_gives(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, [(1,)], acount="me")
    scheduler = BatchScheduler(CopyDialect())
    with pytest.raises(ValueError) as from_submit:
        scheduler.clustrix_submit(spec, wake=lambda: None)
    with pytest.raises(ValueError) as from_dry_run:
        scheduler.clustrix_dry_run(spec)
    assert str(from_dry_run.value) == str(from_submit.value)
    assert "'acount'" in str(from_dry_run.value) and "account" in str(from_dry_run.value)


def test_a_dry_run_to_another_host_connects_nowhere_and_marks_the_remote_home(tmp_path: Path) -> None:
    def no_transport(config: Any) -> Any:
        raise AssertionError("a dry run asked for a transport")

    spec = spec_for(tmp_path, [(1,)], config={"cluster_host": "login.example.invalid", "remote_work_dir": "~/jobs"})
    shown = BatchScheduler(CopyDialect(), transport_factory=no_transport).clustrix_dry_run(spec)
    job_dir = f"{REMOTE_HOME}/jobs/{spec.job_id}"
    assert shown.script_path == f"{job_dir}/job.sh"
    assert f"exec {sys.executable} '{job_dir}/{RUNNER_NAME}'" in str(shown.script)
    assert any(REMOTE_HOME in note and "login.example.invalid" in note for note in shown.notes)


def test_a_dry_run_shows_the_replicated_venv_a_submit_would_build_without_building_it(tmp_path: Path) -> None:
    config = resolve_config(overrides={"remote_work_dir": str(tmp_path / "w")})
    snapshot = {"python": "3.11.7", "hash": "h", "distributions": [{"name": "x", "source": "pypi", "version": "1"}]}
    spec = JobSpec(name="add", func=add, arguments=[((1,), {})], config=config, environment=snapshot)
    shown = BatchScheduler(CopyDialect()).clustrix_dry_run(spec)
    from clustrix.remote.environment.activation import base_selection
    from clustrix.remote.environment.venv import environment_key, venv_python

    python = venv_python(str(tmp_path / "w"), environment_key(snapshot, base_selection(config)))
    assert f"exec {python} " in str(shown.script)
    assert not (tmp_path / "w").exists()
    assert any("replicated venv" in note for note in shown.notes)


def test_a_local_function_says_it_has_no_job_script_and_submits_nothing() -> None:
    shown = cluster(add).job_script(1, y=2)
    assert shown.scheduler == "local" and shown.script is None and shown.commands == ()
    assert "no job script" in str(shown)
    assert registry.list_jobs() == []


def test_a_scheduler_without_a_dry_run_hook_is_named_in_the_error(tmp_path: Path) -> None:
    pytest.importorskip("clustrix_testsched", reason="the third-party test scheduler is installed with core's tests")
    fn = cluster(cluster_type="subprocess", remote_work_dir=str(tmp_path))(add)
    with pytest.raises(ConfigurationError, match=r"'subprocess' cannot show a dry run.*clustrix_dry_run"):
        fn.job_script(1)
    assert registry.list_jobs() == []


def test_an_empty_map_dry_run_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one item"):
        cluster(add).job_script.map([])


@pytest.fixture
def module_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "dry_target.py").write_text(
        textwrap.dedent(
            """
            from clustrix import cluster

            @cluster(cores=1)
            def scale(x, factor=2):
                return x * factor

            def plain(x):
                return x
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "dry_target"


def test_cli_submit_dry_run_prints_what_would_run_and_records_nothing(
    module_here: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", "--dry-run", f"{module_here}:scale", "3", "--kw", "factor=4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["scheduler"] == "local" and data["calls"] == 1 and data["script"] is None
    assert main(["submit", "--dry-run", "--map", f"{module_here}:plain", "[1, 2, 3]"]) == 0
    text = capsys.readouterr().out
    assert "3 call(s)" in text and "no job script" in text
    assert registry.list_jobs() == []


def test_cli_submit_without_dry_run_or_with_a_bad_target_is_a_one_line_error(
    module_here: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", f"{module_here}:scale", "3"]) == 1
    assert "add --dry-run" in capsys.readouterr().err
    assert main(["submit", "--dry-run", f"{module_here}:nothing"]) == 1
    assert "has no 'nothing'" in capsys.readouterr().err
    assert main(["submit", "--dry-run", "no-colon"]) == 1
    assert "use MODULE:FUNCTION" in capsys.readouterr().err


def test_a_task_spooler_dry_run_shows_its_socket_and_the_time_limit_it_wraps_the_runner_in(tmp_path: Path) -> None:
    tsp = pytest.importorskip("clustrix_tsp", reason="the tsp test plugin is installed in tests-all, not tests-core")
    spec = spec_for(tmp_path, [(1,), (2,)], time="00:01:00", config={"tsp_socket": "/run/ts.sock"})
    shown = BatchScheduler(tsp.TspDialect()).clustrix_dry_run(spec)
    job_dir = tmp_path / spec.job_id
    assert shown.commands[1] == (
        f"env TS_SOCKET=/run/ts.sock tsp -N 1 -L add sh -c 'exec \"$0\" >stdout 2>stderr' {job_dir / 'job.sh'}"
    )
    assert f"exec timeout -k 10 60s {sys.executable} {job_dir / RUNNER_NAME} {job_dir} --task 0" in str(shown.script)
    assert (shown.calls, shown.tasks) == (2, 1)  # no arrays: one task runs both calls
