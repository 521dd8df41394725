"""``fn.job_script`` on the plain ssh backend: the job script and the line that starts it detached; nothing connects."""

from __future__ import annotations

from clustrix import cluster, registry
from clustrix.plugin.dryrun import REMOTE_HOME


def halve(x):
    return x / 2


def test_an_ssh_dry_run_shows_the_driver_and_the_detached_start_without_connecting() -> None:
    fn = cluster(
        cluster_type="ssh",
        cluster_host="box.example.invalid",  # does not resolve: a connection attempt would fail the test
        python_executable="~/venv/bin/python",
        max_parallel_jobs=2,
        environment_variables={"OMP_NUM_THREADS": "1"},
    )(halve)
    shown = fn.job_script.map(range(3))
    job_dir = f"{REMOTE_HOME}/.clustrix/{shown.job_id}"
    python = f"{REMOTE_HOME}/venv/bin/python"
    driver = str(shown.script).splitlines()
    assert driver[0] == f"cd -- '{job_dir}' || exit 1"  # the job starts in its private directory
    assert driver[1] == f". '{job_dir}/variables.sh'"  # the values are in the private file, not the driver
    assert "OMP_NUM_THREADS" not in str(shown.script)
    assert any("OMP_NUM_THREADS=<set, 1 bytes>" in note for note in shown.notes)
    assert "P=2" in driver
    runner = f"'{job_dir}/clustrix_runner.py'"  # the runner file shipped into the job directory
    assert f"xargs -n 1 -P \"$P\" '{python}' {runner} '{job_dir}' --task" in driver[-1]
    assert shown.script_path == f"{job_dir}/job.sh"
    assert shown.commands == (
        f"cd '{job_dir}'",
        f"sh -c 'setsid nohup sh \"$0\" </dev/null >stdout 2>stderr & echo \"$!:$1\"' '{job_dir}/job.sh' "
        f"{shown.job_id}",
    )
    assert any("box.example.invalid" in note for note in shown.notes)
    assert registry.list_jobs() == []
