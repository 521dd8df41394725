"""Errors of the SSH transport; each message says what to do about it."""

from __future__ import annotations

from clustrix.errors import ClustrixError, ConfigurationError, UnsafePathError


class SSHConnectionError(ClustrixError, ConnectionError):
    """The SSH connection could not be opened or authenticated."""


class HostKeyError(ConfigurationError):
    """The server's host key is not trusted: unknown, or different from the one on record."""


class UnknownHostKeyError(HostKeyError):
    """No known_hosts entry for the server, and the policy does not add new ones."""


class ChangedHostKeyError(HostKeyError):
    """The server presented a key different from the known_hosts entry (always refused)."""


class ControlDirError(UnsafePathError):
    """The directory of the SSH master sockets is not private to the user (or cannot be used)."""


class LoginRequiredError(SSHConnectionError):
    """The OpenSSH transport found no usable login for a host and may not prompt: run ``clustrix login HOST``."""
