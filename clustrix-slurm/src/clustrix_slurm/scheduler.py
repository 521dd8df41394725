"""The SLURM scheduler: the batch engine of clustrix core speaking :class:`~clustrix_slurm.dialect.SlurmDialect`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clustrix.batch.engine import BatchScheduler
from clustrix.errors import SubmitRejectedError
from clustrix.plugin.manager import transport_for
from clustrix.plugin.transport import Transport
from clustrix_slurm.dialect import SlurmDialect

#: sbatch refused the job (its own message); the engine's error under SLURM's name.
SbatchRejectedError = SubmitRejectedError


class SlurmScheduler(BatchScheduler):
    """``cluster_type="slurm"``: :class:`clustrix.batch.engine.BatchScheduler` with the SLURM dialect."""

    def __init__(self, transport_factory: Callable[[Any], Transport] = transport_for) -> None:
        super().__init__(SlurmDialect(), transport_factory=transport_factory)
