"""The ``slurm`` entry point: registers :class:`~clustrix_slurm.scheduler.SlurmScheduler` with clustrix."""

from __future__ import annotations

from collections.abc import Callable

from clustrix.hookspecs import hookimpl
from clustrix_slurm.scheduler import SlurmScheduler


@hookimpl
def clustrix_register_schedulers(register: Callable[[str, object], None]) -> None:
    register("slurm", SlurmScheduler())
