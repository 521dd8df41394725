"""Entry point ``pbs``: registers the PBS Pro / OpenPBS / Torque scheduler with clustrix."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from clustrix.config.keys import ConfigKey
from clustrix.plugin.hookspecs import hookimpl
from clustrix_pbs.parse import Flavour
from clustrix_pbs.scheduler import PBSScheduler

NAME = "pbs"


@hookimpl
def clustrix_register_schedulers(register: Callable[[str, object], None]) -> None:
    register(NAME, PBSScheduler())
    # cluster_type="torque": the same plugin with the Torque flavour fixed
    register("torque", PBSScheduler(forced=Flavour.TORQUE))


@hookimpl
def clustrix_config_keys() -> Mapping[str, Any]:
    return {
        "pbs_flavor": ConfigKey(
            default=None,
            type=str | None,
            help='the PBS flavour, `"pbspro"` or `"torque"`; `None`: detected once per host with `qstat --version`',
            backends=("pbs", "torque"),
        )
    }
