"""Entry point ``sge``: registers the Grid Engine scheduler, which is not implemented yet."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from clustrix.hookspecs import hookimpl

if TYPE_CHECKING:
    from clustrix.jobs import JobSpec

NAME = "sge"
NOT_IMPLEMENTED = (
    "the sge backend (clustrix-sge) is registered but not implemented in this release of clustrix: "
    "no job was submitted. Follow or upvote its issue in the clustrix issue tracker, or use "
    "cluster_type='slurm', 'ssh' or 'local' meanwhile."
)


class SGEScheduler:
    """The ``sge`` scheduler: Grid Engine (SGE, Son of Grid Engine, Univa/Altair GE: qsub/qstat/qdel).

    Every submission raises NotImplementedError.
    """

    @hookimpl
    def clustrix_submit(self, spec: JobSpec, wake: Callable[[], None]) -> NoReturn:
        raise NotImplementedError(NOT_IMPLEMENTED)


@hookimpl
def clustrix_register_schedulers(register: Callable[[str, object], None]) -> None:
    register(NAME, SGEScheduler())
