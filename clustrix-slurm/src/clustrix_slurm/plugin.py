"""The ``slurm`` entry point: registers :class:`~clustrix_slurm.scheduler.SlurmScheduler` with clustrix."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from clustrix.plugin.hookspecs import hookimpl
from clustrix_slurm.scheduler import SlurmScheduler
from clustrix_slurm.script import EXTRA_KEYS


@hookimpl
def clustrix_register_schedulers(register: Callable[[str, object], None]) -> None:
    register("slurm", SlurmScheduler())


@hookimpl
def clustrix_resource_keys() -> Mapping[str, str]:
    return EXTRA_KEYS
