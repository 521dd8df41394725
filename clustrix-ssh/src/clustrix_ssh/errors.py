"""Errors of the SSH transport; each message says what to do about it."""

from __future__ import annotations

from clustrix.errors import ClustrixError, ConfigurationError, LoginNeededError, UnsafePathError


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


class LoginRequiredError(SSHConnectionError, LoginNeededError):
    """No usable login for a host, and no prompt may be shown: run ``clustrix login HOST``.

    A :class:`~clustrix.errors.LoginNeededError`: running jobs wait for the new login.
    """

    def remedy(self, host: str) -> str:
        return f"log in again with `clustrix login {host}`"
