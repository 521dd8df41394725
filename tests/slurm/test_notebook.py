"""A Jupyter notebook sends a function defined in a cell to the real SLURM testbed, on the login node and over SSH."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clustrix import reset_config
from tests.notebooks.kernel import cell_text, run_notebook

pytestmark = pytest.mark.testbed_slurm


@pytest.fixture
def options(slurm_cluster, transport_options, tmp_path, monkeypatch, fresh_plugins) -> dict[str, Any]:
    monkeypatch.setenv("CLUSTRIX_DATA_DIR", str(tmp_path / "registry"))  # the kernels inherit it
    reset_config()
    return {"cluster_type": "slurm", "job_poll_interval": 0.2, **transport_options}


def test_a_notebook_maps_a_cell_function_on_slurm_and_a_new_kernel_reattaches(
    options: dict[str, Any], tmp_path: Path
) -> None:
    outputs = run_notebook(
        [
            "import json\nfrom clustrix import cluster\n"
            f"options = json.loads({json.dumps(options)!r})\n"
            "@cluster(**options)\n"
            "def cube(x):\n"
            "    import time\n"
            "    time.sleep(1)  # the map outlasts the bar's half-second delay\n"
            "    return x ** 3",
            "print(cube.map(range(5), progress=True))",
            "future = cube.submit(4)\nprint('JOB', future.job_id)\nprint(future.result(timeout=300))",
        ],
        tmp_path,
    )
    assert "[0, 1, 8, 27, 64]" in cell_text(outputs[1])
    assert "5/5" in cell_text(outputs[1])
    lines = cell_text(outputs[2]).split()
    job_id = lines[lines.index("JOB") + 1]
    assert lines[-1] == "64"
    reattached = run_notebook([f"import clustrix\nprint(clustrix.Job.attach({job_id!r}).result())"], tmp_path)
    assert cell_text(reattached[0]).strip() == "64"
