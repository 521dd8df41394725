"""The ``sge`` entry point: the batch engine with :class:`~clustrix_sge.dialect.SGEDialect`, and SGE's configuration."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from clustrix.batch.engine import BatchScheduler
from clustrix.config.keys import ConfigKey
from clustrix.plugin.hookspecs import hookimpl
from clustrix_sge.dialect import SGEDialect
from clustrix_sge.script import CONFIG_KEYS

_SGE = ("sge",)

#: The site settings of :mod:`clustrix_sge.script`, and where Grid Engine lives when a
#: non-interactive shell does not say (None: leave the environment alone).
DECLARED_KEYS: dict[str, ConfigKey] = {
    "sge_pe": ConfigKey(
        default=CONFIG_KEYS["sge_pe"],
        type=str,
        help="the parallel environment of `-pe PE N` for `cores > 1`",
        backends=_SGE,
    ),
    "sge_memory_resources": ConfigKey(
        default=CONFIG_KEYS["sge_memory_resources"],
        type=list[str] | str,
        help="the complexes that get the per-slot memory (`h_vmem` is the limit the execd enforces)",
        backends=_SGE,
    ),
    "sge_root": ConfigKey(
        default=None,
        type=str | None,
        help="`SGE_ROOT` for every Grid Engine command, where a non-interactive shell does not set it",
        backends=_SGE,
    ),
    "sge_cell": ConfigKey(
        default=None,
        type=str | None,
        help="`SGE_CELL` for every Grid Engine command, where a non-interactive shell does not set it",
        backends=_SGE,
    ),
}


@hookimpl
def clustrix_register_schedulers(register: Callable[[str, object], None]) -> None:
    register("sge", BatchScheduler(SGEDialect()))


@hookimpl
def clustrix_config_keys() -> Mapping[str, Any]:
    return DECLARED_KEYS
