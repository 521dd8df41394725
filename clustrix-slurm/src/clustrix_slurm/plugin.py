"""The ``slurm`` entry point: the batch engine of clustrix core with :class:`~clustrix_slurm.dialect.SlurmDialect`."""

from __future__ import annotations

from collections.abc import Callable

from clustrix.batch.engine import BatchScheduler
from clustrix.plugin.hookspecs import hookimpl
from clustrix_slurm.dialect import SlurmDialect


@hookimpl
def clustrix_register_schedulers(register: Callable[[str, object], None]) -> None:
    register("slurm", BatchScheduler(SlurmDialect()))
