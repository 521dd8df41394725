"""The Torque flavour end to end through the Torque-style qsub/qstat/qdel of Debian's slurm-wlm-torque.

Not Torque underneath: SLURM runs the jobs (the shared SLURM testbed). The wrappers set
no ``PBS_ARRAYID`` (the script falls back to ``SLURM_ARRAY_TASK_ID``), show an array as
one ``qstat`` line and print no ``exit_status``, so states come from the job's own files.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clustrix import cluster, reset_config
from tests.testbed import torque

pytestmark = pytest.mark.testbed_pbs


@pytest.fixture
def torque_options(torque_cli: torque.TorqueCLI, tmp_path: Any, monkeypatch: Any) -> Iterator[dict[str, Any]]:
    from clustrix.plugin.manager import reset_plugins

    reset_plugins()
    torque_cli.transport_hook().install()
    monkeypatch.setenv("CLUSTRIX_DATA_DIR", str(tmp_path / "registry"))
    reset_config()
    yield {
        "cluster_type": "torque",
        "cluster_host": torque.TORQUE_HOST,
        "job_poll_interval": 0.2,
        "python_executable": sys.executable,
        "remote_work_dir": str(tmp_path / "jobs"),
    }
    reset_config()
    reset_plugins()


def test_call_map_and_exception_through_the_torque_style_cli(torque_options: dict[str, Any]) -> None:
    @cluster(cores=1, memory="200MB", time="00:05:00", **torque_options)
    def task(x: int) -> tuple[int, str]:
        import os

        if x < 0:
            raise ArithmeticError(f"negative {x}")
        return x * x, os.environ.get("PBS_ARRAYID", "")

    assert task(3) == (9, "1")
    futures = task.submit_map(range(5))
    assert len({f.job_id for f in futures}) == 1
    results = [f.result(timeout=120) for f in futures]
    assert [value for value, _ in results] == [0, 1, 4, 9, 16]
    assert {index for _, index in results} <= {"1", "2", "3", "4", "5"}  # -t 1-5 subjobs, 1-based
    with pytest.raises(ArithmeticError, match="negative -1"):
        task(-1)
    text = Path(futures[0].handle.job_dir or "", "job.pbs").read_text()
    assert "#PBS -t 1-5" in text and "#PBS -l nodes=1:ppn=1" in text and "#PBS -l mem=191mb" in text
