"""The SGE scheduler: the batch engine of clustrix core speaking :class:`~clustrix_sge.dialect.SGEDialect`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clustrix.batch.engine import BatchScheduler
from clustrix.plugin.manager import transport_for
from clustrix.plugin.transport import Transport
from clustrix_sge.dialect import SGEDialect


class SGEScheduler(BatchScheduler):
    """``cluster_type="sge"``: :class:`clustrix.batch.engine.BatchScheduler` with the Grid Engine dialect."""

    def __init__(self, transport_factory: Callable[[Any], Transport] = transport_for) -> None:
        super().__init__(SGEDialect(), transport_factory=transport_factory)
