"""A Jupyter notebook run for real: a kernel (ipykernel) driven by nbclient, as Jupyter runs it.

A function defined in a cell runs with ``@cluster`` on the local executor (its calls
travel to worker processes by value, as notebook functions must), a ``.map()`` draws
its progress bar into the cell's output, and a job submitted from one kernel is picked
up again from a brand-new kernel with ``Job.attach`` (the ``subprocess`` scheduler of
the test plugin stands in for a cluster: its runner is a process of its own, and the job
is in the registry).
"""

from __future__ import annotations

from pathlib import Path

from tests.notebooks.kernel import cell_text as _text
from tests.notebooks.kernel import run_notebook as _run


def test_a_notebook_runs_cluster_functions_maps_with_a_bar_and_reattaches_from_a_new_kernel(tmp_path: Path) -> None:
    work = tmp_path / "work"
    outputs = _run(
        [
            "from clustrix import cluster\ndef cube(x):\n    import time\n    time.sleep(0.5)\n    return x ** 3",
            "fast = cluster(executor='process')(cube)\nprint(fast(3))",
            "print(fast.map(range(6)))",  # a notebook: the bar is on by default
            f"@cluster(cluster_type='subprocess', remote_work_dir={str(work)!r})\n"
            "def remote_cube(x):\n"
            "    return x ** 3\n"
            "future = remote_cube.submit(4)\n"
            "print('JOB', future.job_id)\n"
            "print(future.result(timeout=120))",
        ],
        tmp_path,
    )
    assert _text(outputs[1]).strip() == "27"
    assert "[0, 1, 8, 27, 64, 125]" in _text(outputs[2])
    bar = _text(outputs[2])
    assert "6/6" in bar and "cube" in bar, bar  # tqdm.auto's widget (or its text fallback) in the cell output
    lines = _text(outputs[3]).split()
    job_id = lines[lines.index("JOB") + 1]
    assert lines[-1] == "64"

    # a new kernel: nothing of the first one is left but the registry and the job's files
    reattached = _run([f"import clustrix\nprint(clustrix.Job.attach({job_id!r}).result())"], tmp_path)
    assert _text(reattached[0]).strip() == "64"
