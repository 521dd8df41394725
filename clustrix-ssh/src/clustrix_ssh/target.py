"""Where to connect: clustrix settings merged with ``~/.ssh/config``, as OpenSSH would.

Explicit clustrix settings win over the ssh config (like ssh's command line over its
config file); ``cluster_port=22`` is the default and so does not override a ``Port``
line. Pure apart from reading the config file, so it is tested without a server.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import attrs
import paramiko

DEFAULT_PORT = 22


def ssh_config_path() -> Path:
    """The user's ssh client config (``$HOME`` is read at call time, so tests can move it)."""
    return Path(os.path.expanduser("~/.ssh/config"))


def load_ssh_config(path: Path | None = None) -> paramiko.SSHConfig:
    path = ssh_config_path() if path is None else path
    if path.is_file():
        return paramiko.SSHConfig.from_path(str(path))
    return paramiko.SSHConfig.from_text("")


@attrs.frozen(kw_only=True)
class Target:
    """One resolved SSH destination (a jump host is a ``Target`` too)."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    password: str | None = attrs.field(default=None, repr=False)
    proxy_jump: tuple[str, ...] = ()
    known_hosts_files: tuple[str, ...] = ()
    forward_agent: bool = False

    @property
    def known_hosts_name(self) -> str:
        """The name known_hosts files use for this server (``[host]:port`` off port 22)."""
        return self.hostname if self.port == DEFAULT_PORT else f"[{self.hostname}]:{self.port}"


def split_destination(text: str) -> tuple[str | None, str, int | None]:
    """``user@host:port`` (each part but host optional, ``[v6]:port`` allowed) to its parts."""
    user = None
    if "@" in text:
        user, text = text.rsplit("@", 1)
    port = None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = int(port_text)
    else:
        host = text
    return user, host, port


def resolve_target(
    host: str,
    *,
    port: int | None = None,
    user: str | None = None,
    key_file: str | None = None,
    password: str | None = None,
    forward_agent: bool = False,
    ssh_config: paramiko.SSHConfig | None = None,
) -> Target:
    """Merge explicit settings with the ssh config entry for ``host`` (an alias or a name)."""
    config = load_ssh_config() if ssh_config is None else ssh_config
    entry = config.lookup(host)
    if port in (None, DEFAULT_PORT) and "port" in entry:
        resolved_port = int(entry["port"])
    else:
        resolved_port = int(port or DEFAULT_PORT)
    identities: list[str] = []
    if key_file:
        identities.append(os.path.expanduser(key_file))
    for candidate in entry.get("identityfile", []):
        expanded = os.path.expanduser(candidate)
        if expanded not in identities:
            identities.append(expanded)
    jump = entry.get("proxyjump", "")
    hops = () if not jump or jump.lower() == "none" else tuple(h.strip() for h in jump.split(",") if h.strip())
    known = tuple(os.path.expanduser(p) for p in entry.get("userknownhostsfile", "").split() if p.lower() != "none")
    # ssh_config's ForwardAgent is deliberately not read: a "Host *" default there must not
    # hand the agent to every cluster; only clustrix's own forward_agent=True does.
    return Target(
        alias=host,
        hostname=entry.get("hostname", host),
        port=resolved_port,
        user=user or entry.get("user") or getpass.getuser(),
        identity_files=tuple(identities),
        password=password,
        proxy_jump=hops,
        known_hosts_files=known,
        forward_agent=bool(forward_agent),
    )


def resolve_jump(hop: str, ssh_config: paramiko.SSHConfig | None = None) -> Target:
    """A ``ProxyJump`` element (``[user@]host[:port]``, maybe an alias) as a :class:`Target`."""
    user, host, port = split_destination(hop)
    return resolve_target(host, port=port, user=user, forward_agent=False, ssh_config=ssh_config)
