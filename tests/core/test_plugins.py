"""Plugins: entry-point loading, routing to one scheduler, third-party schedulers, hooks."""

from __future__ import annotations

import concurrent.futures
import inspect
import os
import re
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

import clustrix
from clustrix import Job, cluster, configure
from clustrix.errors import SchedulerNotFoundError
from clustrix.plugin import hookspecs
from clustrix.plugin.manager import (
    PluginWarning,
    get_plugin_manager,
    get_scheduler,
    installed_plugins,
    reset_plugins,
    scheduler_names,
)
from clustrix.plugin.types import JobState

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_local_is_an_ordinary_plugin_from_the_entry_point_group() -> None:
    local = next(info for info in installed_plugins() if info.name == "local")
    assert local.distribution == "clustrix-core"
    assert local.schedulers == ("local",)


def test_a_third_party_scheduler_is_one_module_plus_an_entry_point() -> None:
    info = next(info for info in installed_plugins() if info.name == "subprocess")
    assert info.distribution == "clustrix-testsched"
    assert "subprocess" in scheduler_names()


def test_a_plugin_that_fails_to_import_is_a_warning_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLUSTRIX_DISABLE_PLUGINS")
    reset_plugins()
    with pytest.warns(PluginWarning, match=r"plugin 'broken' \(clustrix_testsched_broken, from clustrix-testsched\)"):
        get_plugin_manager()
    assert "local" in scheduler_names()


def test_plugins_can_be_blocked_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTRIX_DISABLE_PLUGINS", "broken,subprocess")
    reset_plugins()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "subprocess" not in scheduler_names()
    assert not [w for w in caught if "broken" in str(w.message) or "subprocess" in str(w.message)]


def test_unknown_cluster_type_suggests_only_distributions_that_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    # a project-maintained scheduler names its distribution, also under another distribution's name
    monkeypatch.setenv("CLUSTRIX_DISABLE_PLUGINS", "broken,pbs,kubernetes")  # as if not installed
    reset_plugins()
    with pytest.raises(SchedulerNotFoundError, match=r"cluster_type='torque'.*pip install clustrix-pbs"):
        get_scheduler("torque")
    with pytest.raises(SchedulerNotFoundError, match=r"cluster_type='kubernetes'.*pip install clustrix-k8s"):
        get_scheduler("kubernetes")
    # a name nobody ships suggests no package (clustrix-lsf does not exist), but the close installed one
    with pytest.raises(SchedulerNotFoundError) as caught:
        get_scheduler("slrum")
    assert "pip install" not in str(caught.value)
    assert "did you mean 'slurm'?" in str(caught.value)
    with pytest.raises(SchedulerNotFoundError) as caught:
        get_scheduler("lsf")
    assert "clustrix-lsf" not in str(caught.value)


def test_configure_refuses_a_scheduler_name_nobody_provides() -> None:
    with pytest.raises(SchedulerNotFoundError, match=r"cluster_type='nope'") as caught:
        configure(cluster_type="nope")
    assert "clustrix-nope" not in str(caught.value)
    assert clustrix.get_config().cluster_type == "local"  # nothing changed


def test_calling_with_an_uninstalled_project_scheduler_fails_before_submitting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLUSTRIX_DISABLE_PLUGINS", "broken,pbs")  # as if clustrix-pbs were not installed
    clustrix.plugin.manager.reset_plugins()
    configure(cluster_type="pbs")  # accepted: the project ships it, the call says what to install

    @cluster
    def f() -> int:
        return 1

    with pytest.raises(SchedulerNotFoundError, match="pip install clustrix-pbs"):
        f()


def test_plugin_declared_config_keys_are_accepted() -> None:
    configure(testsched_marker="yes")
    assert clustrix.get_config().testsched_marker == "yes"


def test_third_party_scheduler_runs_calls_through_the_remote_runner(tmp_path: Path) -> None:
    import clustrix_testsched

    @cluster(cluster_type="subprocess", remote_work_dir=str(tmp_path / "jobs"))
    def where(x: int) -> tuple[int, str]:
        import os

        return x * 2, os.environ.get("CLUSTRIX_PROBE", "none")

    future = where.submit(21)
    assert future.result(timeout=60) == (42, "none")
    assert where.map(range(10)) == [(2 * x, "none") for x in range(10)]
    # routed to exactly this scheduler, wrapped by the other plugin's hook wrapper, observed
    assert future.job_id in clustrix_testsched.SUBMITTED
    assert "subprocess" in clustrix_testsched.WRAPPED
    job_dir = Path(future.handle.job_dir)
    assert job_dir.stat().st_mode & 0o777 == 0o700
    assert (job_dir / "out" / "task-0.exit").read_text().strip() == "0"


def test_hook_wrappers_of_other_plugins_wrap_every_scheduler() -> None:
    import clustrix_testsched

    before = clustrix_testsched.WRAPPED.count("local")
    assert cluster(lambda: 1)() == 1
    assert clustrix_testsched.WRAPPED.count("local") == before + 1


def test_environment_capture_merges_every_plugins_snapshot_and_core_keys_win() -> None:
    from clustrix.plugin.manager import capture_environment

    snapshot = capture_environment(clustrix.get_config())
    assert snapshot["testsched"] is True
    assert snapshot["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"  # not the plugin's "0.0"
    assert "clustrix-core" in str(snapshot["distributions"]) and snapshot["hash"]


def test_exceptions_raised_by_a_runner_keep_their_type(tmp_path: Path) -> None:
    @cluster(cluster_type="subprocess", remote_work_dir=str(tmp_path))
    def bad() -> None:
        raise LookupError("nothing here")

    with pytest.raises(LookupError, match="nothing here") as info:
        bad()
    assert "bad" in info.value.__cause__.traceback_text  # type: ignore[union-attr]


def test_a_result_is_fetched_by_a_new_process_after_the_submitter_was_killed(tmp_path: Path) -> None:
    submitter = tmp_path / "submit.py"
    submitter.write_text(
        textwrap.dedent(
            f"""
            import os, sys, time
            from clustrix import cluster

            @cluster(cluster_type="subprocess", remote_work_dir={str(tmp_path / "jobs")!r})
            def slow_square(x):
                time.sleep(2)
                return x * x

            future = slow_square.submit(12)
            print(future.job_id, flush=True)
            time.sleep(60)
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(submitter)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    job_id = proc.stdout.readline().strip()
    proc.kill()
    proc.wait()
    assert job_id
    job = Job.attach(job_id[:20])
    assert job.job_id == job_id
    assert job.result(timeout=60) == 144
    assert job.status().state is JobState.COMPLETED


def test_cancel_of_a_running_job_through_the_future(tmp_path: Path) -> None:
    @cluster(cluster_type="subprocess", remote_work_dir=str(tmp_path))
    def sleeper() -> None:
        time.sleep(60)

    future = sleeper.submit()
    time.sleep(0.5)
    (pid,) = future.handle.data["pids"]
    assert _running(pid)
    assert future.cancel()
    job = Job.attach(future.job_id)
    assert job.record.state is JobState.CANCELLED
    deadline = time.monotonic() + 10
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(pid), "the runner process still runs after cancel"


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (reaps it if it is our exited child)."""
    try:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _signature(name: str) -> str:
    sig = inspect.signature(getattr(hookspecs, name))
    params = ", ".join(sig.parameters)
    return f"{name}({params})"


def test_every_hookspec_is_documented_with_its_exact_signature() -> None:
    text = (DOCS / "hooks.md").read_text()
    names = [n for n in dir(hookspecs) if n.startswith("clustrix_")]
    assert names
    for name in names:
        assert _signature(name) in text, f"docs/hooks.md does not document {_signature(name)}"
    documented = set(re.findall(r"(clustrix_\w+)\(", text))
    assert documented <= set(names), f"docs/hooks.md documents hooks that do not exist: {documented - set(names)}"


def test_cleanup_on_success_removes_the_job_directory_only_when_every_call_succeeded(tmp_path: Path) -> None:
    @cluster(cluster_type="subprocess", remote_work_dir=str(tmp_path), cleanup_on_success=True)
    def maybe(x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x

    good = maybe.submit(1)
    assert good.result(timeout=60) == 1
    bad = maybe.submit(-1)
    with pytest.raises(ValueError):
        bad.result(timeout=60)
    # the directory is removed before the future resolves: no wait needed
    assert not Path(good.handle.job_dir).exists()
    assert Path(bad.handle.job_dir).exists()  # kept for inspection: a call failed


def test_an_attached_arrays_result_is_its_first_call_and_results_raise_the_failing_calls_error(
    tmp_path: Path,
) -> None:
    @cluster(cluster_type="subprocess", remote_work_dir=str(tmp_path))
    def inverse(x: int) -> float:
        return 1 / x

    futures = inverse.submit_map([4, 0])
    concurrent.futures.wait(futures, timeout=60)
    job = Job.attach(futures[0].job_id)
    assert job.result(timeout=60) == 0.25  # call 1 failing does not hide call 0's value
    with pytest.raises(ZeroDivisionError):
        job.results(timeout=60)


def test_a_plugin_fetching_too_few_outcomes_is_warned_about_and_the_missing_calls_count_as_lost() -> None:
    import pluggy

    from clustrix.plugin.manager import PluginWarning, RegisteredScheduler
    from clustrix.plugin.types import JobHandle, Outcome

    class ShortFetch:
        @hookspecs.hookimpl
        def clustrix_fetch(self, handle: JobHandle) -> list[Outcome]:
            return [Outcome(ok=True, value=1)]

    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    impl = ShortFetch()
    pm.register(impl)
    scheduler = RegisteredScheduler("short", impl, pm, lambda: [])  # type: ignore[arg-type]
    handle = JobHandle(job_id="j", scheduler="short", size=3)
    with pytest.warns(PluginWarning, match="'short' fetched 1 outcomes for job j of 3 calls"):
        outcomes = scheduler.fetch(handle, clustrix.get_config())
    assert [o.value if o else None for o in outcomes] == [1, None, None]
