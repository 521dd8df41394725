"""``fn.job_script`` on Grid Engine: the ``#$`` script and the ``qsub`` line, with the cell's environment."""

from __future__ import annotations

from clustrix import cluster, registry


def square(x):
    return x * x


def test_a_map_dry_run_shows_the_sge_task_array_and_the_qsub_line_with_sge_root() -> None:
    fn = cluster(
        cluster_type="sge",
        cores=2,
        time="00:05:00",
        remote_work_dir="/scratch/me",
        python_executable="/opt/py/bin/python",
        sge_root="/opt/sge",
    )(square)
    shown = fn.job_script.map([1, 2, 3])
    job_dir = f"/scratch/me/{shown.job_id}"
    lines = str(shown.script).splitlines()
    assert lines[0] == "#!/bin/bash" and "#$ -t 1-3" in lines
    assert all(line.startswith("#$ ") for line in lines[1 : lines.index("#$ -t 1-3")])
    assert lines[-1].startswith(f"exec /opt/py/bin/python {job_dir}/clustrix_runner.py {job_dir} --task")
    assert "SGE_TASK_ID" in lines[-1]
    assert shown.commands == (f"cd {job_dir}", f"env SGE_ROOT=/opt/sge qsub -terse {job_dir}/job.sge")
    assert registry.list_jobs() == []
