"""A clustrix plugin that hands out a testbed's own transport for one pseudo host name.

``cluster_host="openpbs-netns"`` reaches OpenPBS inside its network namespace as the job
user; ``cluster_host="torque-cli"`` is the login node with the Torque-style wrappers first
on PATH. The scheduler plugins see an ordinary :class:`clustrix.plugin.transport.Transport`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clustrix.plugin.hookspecs import hookimpl
from clustrix.plugin.transport import Transport


class TransportHook:
    """``clustrix_make_transport`` for configurations whose ``cluster_host`` is ``host``."""

    def __init__(self, host: str, make: Callable[[], Transport]) -> None:
        self.host = host
        self.make = make

    @hookimpl
    def clustrix_make_transport(self, config: Any) -> Transport | None:
        return self.make() if config.get("cluster_host") == self.host else None

    def install(self) -> None:
        """Register with the current plugin manager (again after a ``reset_plugins``)."""
        from clustrix.plugin.manager import get_plugin_manager

        manager = get_plugin_manager()
        if not manager.is_registered(self):
            manager.register(self, name=f"transport-hook-{self.host}-{id(self)}")
