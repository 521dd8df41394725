"""clustrix over SSH: a paramiko transport for every scheduler plugin, and the plain ``ssh`` backend."""

from __future__ import annotations

from clustrix_ssh.errors import ChangedHostKeyError, HostKeyError, SSHConnectionError, UnknownHostKeyError
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
