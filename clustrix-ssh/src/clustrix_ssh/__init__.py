"""clustrix over SSH: the SSH transport of every scheduler plugin (paramiko or OpenSSH), and the ``ssh`` backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clustrix_ssh.errors import (
    ChangedHostKeyError,
    ControlDirError,
    HostKeyError,
    LoginRequiredError,
    SSHConnectionError,
    UnknownHostKeyError,
)

if TYPE_CHECKING:
    from clustrix_ssh.openssh import OpenSSHTransport
    from clustrix_ssh.transport import SSHTransport, close_all, get_transport

__all__ = [
    "ChangedHostKeyError",
    "ControlDirError",
    "HostKeyError",
    "LoginRequiredError",
    "OpenSSHTransport",
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
    if name == "OpenSSHTransport":
        from clustrix_ssh.openssh import OpenSSHTransport

        return OpenSSHTransport
    raise AttributeError(f"module 'clustrix_ssh' has no attribute {name!r}")
