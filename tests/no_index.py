"""What the no-index tests replicate (tests/pbs/test_no_index.py, tests/slurm/test_no_index_slurm.py)."""

from __future__ import annotations

from typing import Any

from clustrix.remote.environment.capture import capture_environment, environment_hash

#: Wheels for CPython 3.11 on manylinux exist for these; the snapshot adds them to this environment's.
NUMPY = {"name": "numpy", "version": "2.2.6", "source": "pypi"}
#: Only an sdist is on PyPI for docopt.
SDIST_ONLY = {"name": "docopt", "version": "0.6.2", "source": "pypi"}


def snapshot_with(*extra: dict[str, str]) -> dict[str, Any]:
    """This environment's snapshot for cloudpickle alone, plus ``extra`` distributions."""
    snapshot = capture_environment(["cloudpickle"])
    snapshot["distributions"] = [*snapshot["distributions"], *extra]
    snapshot["hash"] = environment_hash(snapshot["python"], snapshot["distributions"])
    return snapshot
