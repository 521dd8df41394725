"""clustrix over SSH: a paramiko transport for every scheduler plugin, and the plain ``ssh`` backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clustrix_ssh.errors import ChangedHostKeyError, HostKeyError, SSHConnectionError, UnknownHostKeyError

if TYPE_CHECKING:
    from clustrix_ssh.transport import SSHTransport, close_all, get_transport

__all__ = [
    "ChangedHostKeyError",
    "HostKeyError",
    "SSHConnectionError",
    "SSHTransport",
    "UnknownHostKeyError",
    "close_all",
    "get_transport",
]


def __getattr__(name: str) -> Any:
    # the transport (paramiko) loads on first use: loading the plugin, as every clustrix process does, stays cheap
    if name in {"SSHTransport", "close_all", "get_transport"}:
        from clustrix_ssh import transport

        return getattr(transport, name)
    raise AttributeError(f"module 'clustrix_ssh' has no attribute {name!r}")
