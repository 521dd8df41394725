"""The ``sge`` entry point: registers :class:`~clustrix_sge.scheduler.SGEScheduler`, its configuration and keywords."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from clustrix.hookspecs import hookimpl
from clustrix_sge.scheduler import SGEScheduler
from clustrix_sge.script import CONFIG_KEYS, EXTRA_KEYS

#: Where Grid Engine lives when a non-interactive shell does not say (None: leave the environment alone).
ENVIRONMENT_KEYS: dict[str, Any] = {"sge_root": None, "sge_cell": None}


@hookimpl
def clustrix_register_schedulers(register: Callable[[str, object], None]) -> None:
    register("sge", SGEScheduler())


@hookimpl
def clustrix_config_keys() -> Mapping[str, Any]:
    return {**CONFIG_KEYS, **ENVIRONMENT_KEYS}


@hookimpl
def clustrix_resource_keys() -> Mapping[str, str]:
    # the @cluster(project=..., pe=...) keywords core accepts at decoration for this plugin
    return EXTRA_KEYS
