"""Host-key checking: known_hosts files, the ``reject`` and ``accept-new`` policies.

By default an unknown server is refused with a message that says how to trust it;
``host_key_policy="accept-new"`` records a new server's key (as OpenSSH's
``StrictHostKeyChecking=accept-new``); a *changed* key is refused under every policy.
"""

from __future__ import annotations

import os
import shlex
import threading
from pathlib import Path

import paramiko

from clustrix_ssh.errors import ChangedHostKeyError, UnknownHostKeyError
from clustrix_ssh.target import DEFAULT_PORT, Target

POLICIES = ("reject", "accept-new")
_append_lock = threading.Lock()


def default_known_hosts() -> Path:
    return Path(os.path.expanduser("~/.ssh/known_hosts"))


def fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


def trust_hint(target: Target, known_hosts_file: str | None) -> str:
    """How a user trusts ``target``: the ssh-keyscan line and the accept-new opt-in."""
    destination = known_hosts_file or "~/.ssh/known_hosts"
    port = [] if target.port == DEFAULT_PORT else ["-p", str(target.port)]
    scan = shlex.join(["ssh-keyscan", *port, target.hostname])
    return (
        f"check the fingerprint with the host's administrator, then trust it with:\n"
        f"    {scan} >> {destination}\n"
        f'or let clustrix record new hosts on first use with host_key_policy="accept-new" '
        f"(changed keys are still refused)"
    )


def append_known_host(path: Path, name: str, key: paramiko.PKey) -> None:
    """Add one ``name keytype base64`` line to ``path`` (created 0600 in a 0700 dir if missing)."""
    with _append_lock:
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(f"{name} {key.get_name()} {key.get_base64()}\n")


class RejectUnknown(paramiko.MissingHostKeyPolicy):
    """Refuse a server with no known_hosts entry, saying exactly how to trust it."""

    def __init__(self, target: Target, known_hosts_file: str | None) -> None:
        self.target = target
        self.known_hosts_file = known_hosts_file

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise UnknownHostKeyError(
            f"the host key of {hostname} ({fingerprint(key)}) is not in any known_hosts file "
            f"({self.known_hosts_file or '~/.ssh/known_hosts'}); refusing to connect.\n"
            + trust_hint(self.target, self.known_hosts_file)
        )


class AcceptNew(paramiko.MissingHostKeyPolicy):
    """Record a new server's key in the known_hosts file and go on (changed keys never reach here)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        append_known_host(self.path, hostname, key)


def configure_client(client: paramiko.SSHClient, target: Target, *, known_hosts_file: str | None, policy: str) -> None:
    """Load the known_hosts files that apply to ``target`` and set the missing-key policy."""
    if policy not in POLICIES:
        raise ValueError(f"host_key_policy={policy!r} is not valid: use one of {', '.join(map(repr, POLICIES))}")
    default = default_known_hosts()
    if default.is_file():
        client.load_system_host_keys(str(default))
    for extra in target.known_hosts_files:
        if Path(extra).is_file():
            client.load_system_host_keys(extra)
    if known_hosts_file and Path(os.path.expanduser(known_hosts_file)).is_file():
        client.load_host_keys(os.path.expanduser(known_hosts_file))
    if policy == "accept-new":
        path = Path(os.path.expanduser(known_hosts_file)) if known_hosts_file else default
        client.set_missing_host_key_policy(AcceptNew(path))
    else:
        client.set_missing_host_key_policy(RejectUnknown(target, known_hosts_file))


def changed_key_error(
    target: Target, exc: paramiko.BadHostKeyException, known_hosts_file: str | None
) -> ChangedHostKeyError:
    """The error for a server whose key differs from the one on record."""
    record = os.path.expanduser(known_hosts_file or "~/.ssh/known_hosts")
    return ChangedHostKeyError(
        f"the host key of {target.known_hosts_name} has CHANGED: it offered {fingerprint(exc.key)}, "
        f"but known_hosts has {fingerprint(exc.expected_key)}. This may be a man-in-the-middle attack, "
        f"or the host was reinstalled. clustrix refuses to connect under every host_key_policy. If the "
        f"administrator confirms the new key, remove the old entry with "
        f"{shlex.join(['ssh-keygen', '-R', target.known_hosts_name, '-f', record])} "
        f"and trust the new one."
    )
