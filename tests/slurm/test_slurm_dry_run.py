"""``fn.job_script(...)`` and ``clustrix submit --dry-run`` on SLURM: what is shown is what a real sbatch gets."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest

from clustrix import cluster, registry
from clustrix.batch.engine import BatchScheduler
from clustrix.cli.app import main
from clustrix.config.resources import Resources
from clustrix.plugin.dryrun import REMOTE_HOME
from clustrix.plugin.types import JobSpec
from clustrix_slurm import SlurmDialect
from tests.slurm.helpers import PYTHON, CountingTransport, Direct, poll_until_final, slurm_config


def triple(x):
    return 3 * x


def test_a_map_dry_run_shows_the_sbatch_array_script_and_command_for_a_remote_login_node() -> None:
    fn = cluster(
        cores=4,
        memory="2GB",
        time="00:30:00",
        partition="short",
        cluster_type="slurm",
        cluster_host="hpc.example.invalid",
        python_executable="/opt/py/bin/python",
    )(triple)
    shown = fn.job_script.map(range(5))
    job_dir = f"{REMOTE_HOME}/.clustrix/{shown.job_id}"
    script = str(shown.script)
    for line in (
        "#SBATCH --array=0-4",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --partition=short",
        "#SBATCH --time=00:30:00",
        f"#SBATCH --output='{job_dir}/slurm-%A_%a.out'",
    ):
        assert line in script.splitlines(), line
    assert f"exec /opt/py/bin/python '{job_dir}/clustrix_runner.py'" in script
    assert shown.commands == (f"cd '{job_dir}'", f"sbatch --parsable '{job_dir}/job.sbatch'")
    assert (shown.calls, shown.tasks) == (5, 5)
    assert registry.list_jobs() == []


def test_a_dry_run_refuses_bad_input_as_a_submit_does_and_names_an_unpicklable_argument(tmp_path: Path) -> None:
    fn = cluster(cluster_type="slurm", remote_work_dir=str(tmp_path), python_executable=PYTHON, qos="a b\nc")(triple)
    with pytest.raises(ValueError) as from_submit:
        fn.submit(1)
    with pytest.raises(ValueError) as from_dry_run:
        fn.job_script(1)
    assert str(from_dry_run.value) == str(from_submit.value) and "qos" in str(from_dry_run.value)
    ok = cluster(cluster_type="slurm", remote_work_dir=str(tmp_path), python_executable=PYTHON)(triple)
    with pytest.raises(TypeError, match=r"argument 'x' .*cannot be pickled"):
        ok.job_script(threading.Lock())
    assert registry.list_jobs() == [] and list(tmp_path.iterdir()) == []


def test_cli_submit_dry_run_prints_the_sbatch_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sim.py").write_text("def run(n):\n    return n\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CLUSTRIX_CLUSTER_TYPE", "slurm")
    monkeypatch.setenv("CLUSTRIX_REMOTE_WORK_DIR", str(tmp_path / "jobs"))
    assert main(["submit", "--dry-run", "sim:run", "7", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["script"].startswith("#!/bin/bash\n#SBATCH ")
    assert data["commands"][1] == f"sbatch --parsable {tmp_path / 'jobs' / data['job_id'] / 'job.sbatch'}"
    assert not (tmp_path / "jobs").exists() and registry.list_jobs() == []


@pytest.mark.testbed_slurm
def test_the_dry_run_is_exactly_what_a_real_sbatch_gets_and_submits_nothing(slurm_cluster, tmp_path, fresh_plugins):
    config = slurm_config(str(tmp_path / "jobs"))
    name = f"dry-{tmp_path.name}"[-60:]
    spec = JobSpec(
        name="triple",
        func=triple,
        arguments=[((i,), {}) for i in range(3)],
        resources=Resources.parse(cores=1, time=120, job_name=name),
        config=config,
    )
    transport = CountingTransport()
    scheduler = Direct(BatchScheduler(SlurmDialect(), transport_factory=lambda _config: transport))
    shown = scheduler.impl.clustrix_dry_run(spec=spec)
    queued = subprocess.run(["squeue", "-h", "-n", name], capture_output=True, text=True, check=True).stdout
    assert transport.commands == [] and queued == "" and not (tmp_path / "jobs").exists()

    handle = scheduler.submit(spec, wake=lambda: None)
    staged = Path(str(handle.job_dir), "job.sbatch").read_text()
    assert staged == shown.script
    cd, sbatch = shown.commands
    assert any(f"\n{cd} || exit 1\n" in c and f"\nexec {sbatch}\n" in c for c in transport.commands)
    status, _ = poll_until_final(scheduler, handle, config, timeout=120)
    assert status.state.value == "COMPLETED"
    assert [o.value for o in scheduler.fetch(handle, config)] == [0, 3, 6]


def test_a_dry_run_of_a_map_beyond_the_default_array_limit_says_the_real_submit_asks_the_site() -> None:
    fn = cluster(cluster_type="slurm", cluster_host="hpc.example.invalid", python_executable="/opt/py/bin/python")(
        triple
    )
    shown = fn.job_script.map(range(1500))
    assert (shown.calls, shown.tasks) == (1500, SlurmDialect.default_max_array_size)
    assert any(
        "array size limited to 1001 tasks (the default)" in note and "scontrol show config" in note
        for note in shown.notes
    ), shown.notes
    assert "#SBATCH --array=0-1000" in str(shown.script).splitlines()
