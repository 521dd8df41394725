"""One authenticated SSH connection (through ProxyJump hops if configured), kept alive.

:class:`Connection` opens lazily, sends keepalives, and reopens after the link dropped;
it also owns the connection's one SFTP session. Auth follows OpenSSH's order as far as
paramiko allows: identity files (``key_file`` first), the ssh-agent, default keys in
``~/.ssh``, and a password only when one was configured.
"""

from __future__ import annotations

import threading
from typing import Any

import paramiko

from clustrix.log import get_logger
from clustrix_ssh import hostkeys, prompt
from clustrix_ssh.errors import HostKeyError, LoginRequiredError, SSHConnectionError
from clustrix_ssh.target import Target, load_ssh_config, resolve_jump

log = get_logger("clustrix.ssh")

KEEPALIVE_SECONDS = 15
CONNECT_TIMEOUT = 20.0
MAX_JUMPS = 8
#: Channel window for commands and SFTP: paramiko's 2 MB default halves bulk throughput.
WINDOW_SIZE = 16 * 1024 * 1024


class Counters:
    """Network operations on one connection: command channels opened and SFTP requests sent.

    Each is at least one round trip; benchmarks and tests read them to count what a call costs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.commands = 0
        self.sftp_requests = 0

    def add(self, *, commands: int = 0, sftp_requests: int = 0) -> None:
        with self._lock:
            self.commands += commands
            self.sftp_requests += sftp_requests

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"commands": self.commands, "sftp_requests": self.sftp_requests}


class CountingSFTPClient(paramiko.SFTPClient):
    """An SFTP client that counts the requests it sends (see :class:`Counters`)."""

    counters: Counters | None = None

    def _async_request(self, fileobj: Any, t: int, *args: Any) -> int:
        if self.counters is not None:
            self.counters.add(sftp_requests=1)
        num: int = super()._async_request(fileobj, t, *args)  # type: ignore[misc]  # private, absent from the stubs
        return num


def _connect_client(
    target: Target,
    *,
    known_hosts_file: str | None,
    policy: str,
    sock: Any = None,
) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    hostkeys.configure_client(client, target, known_hosts_file=known_hosts_file, policy=policy)
    try:
        client.connect(
            target.hostname,
            port=target.port,
            username=target.user,
            password=target.password,
            # paramiko takes a list of files too; the stubs only say str
            key_filename=list(target.identity_files) or None,  # type: ignore[arg-type]
            allow_agent=True,
            look_for_keys=not target.identity_files,
            timeout=CONNECT_TIMEOUT,
            banner_timeout=CONNECT_TIMEOUT,
            auth_timeout=CONNECT_TIMEOUT,
            sock=sock,
            transport_factory=prompt.transport_factory(target.alias),
        )
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise hostkeys.changed_key_error(target, exc, known_hosts_file) from None
    except (HostKeyError, LoginRequiredError):
        client.close()
        raise
    except paramiko.AuthenticationException as exc:
        client.close()
        tried = ", ".join(target.identity_files) or "the ssh-agent and ~/.ssh/id_*"
        raise SSHConnectionError(
            f"authentication as {target.user!r} on {target.known_hosts_name} failed ({exc}); tried {tried}"
            + ("" if target.password is None else " and the configured password")
            + ". Set key_file=, or add an IdentityFile to ~/.ssh/config (see docs/ssh-setup.md)."
        ) from exc
    except (OSError, paramiko.SSHException, EOFError) as exc:
        client.close()
        raise SSHConnectionError(
            f"cannot connect to {target.known_hosts_name} as {target.user!r}: {type(exc).__name__}: {exc}"
        ) from exc
    transport = client.get_transport()
    assert transport is not None
    transport.set_keepalive(KEEPALIVE_SECONDS)
    return client


class Connection:
    """A lazily opened, self-healing SSH connection to one target; safe to share between threads."""

    def __init__(self, target: Target, *, known_hosts_file: str | None = None, policy: str = "reject") -> None:
        self.target = target
        self.known_hosts_file = known_hosts_file
        self.policy = policy
        self._lock = threading.RLock()
        self._client: paramiko.SSHClient | None = None
        self._jumps: list[paramiko.SSHClient] = []
        self._sftp: CountingSFTPClient | None = None
        self.sftp_lock = threading.RLock()
        self.generation = 0  # counts (re)connections, for tests and logs
        self.counters = Counters()

    # -- state ----------------------------------------------------------------

    def is_active(self) -> bool:
        client = self._client
        transport = client.get_transport() if client is not None else None
        return bool(transport is not None and transport.is_active())

    def client(self) -> paramiko.SSHClient:
        """The connected client, (re)connecting if the link is down."""
        with self._lock:
            if self._client is None or not self.is_active():
                self._open()
            assert self._client is not None
            return self._client

    def transport(self) -> paramiko.Transport:
        transport = self.client().get_transport()
        assert transport is not None
        return transport

    def open_command_channel(self) -> paramiko.Channel:
        """A new session channel with a large window (counted as one command)."""
        channel = self.transport().open_session(window_size=WINDOW_SIZE)
        self.counters.add(commands=1)
        return channel

    def sftp(self) -> paramiko.SFTPClient:
        """The connection's SFTP session (opened on first use, reopened after a reconnect)."""
        with self._lock:
            client = self.client()
            channel = None if self._sftp is None else self._sftp.get_channel()
            if channel is not None and channel.closed:  # the session ended, the connection did not
                self._sftp = None
            if self._sftp is None:
                transport = client.get_transport()
                assert transport is not None
                sftp = CountingSFTPClient.from_transport(transport, window_size=WINDOW_SIZE)
                if sftp is None:
                    raise SSHConnectionError(f"{self.target.known_hosts_name} refused to open an SFTP session")
                sftp.counters = self.counters
                self._sftp = sftp
            return self._sftp

    # -- opening and closing -------------------------------------------------------

    def _open(self) -> None:
        self._close_quietly()
        sock: Any = None
        jumps: list[paramiko.SSHClient] = []
        ssh_config = load_ssh_config() if self.target.proxy_jump else None
        if len(self.target.proxy_jump) > MAX_JUMPS:
            raise SSHConnectionError(
                f"ProxyJump for {self.target.alias} has {len(self.target.proxy_jump)} hops; "
                f"clustrix follows at most {MAX_JUMPS}"
            )
        hops = [resolve_jump(hop, ssh_config) for hop in self.target.proxy_jump]
        try:
            for index, hop in enumerate(hops):
                jump = _connect_client(hop, known_hosts_file=self.known_hosts_file, policy=self.policy, sock=sock)
                jumps.append(jump)
                nxt = hops[index + 1] if index + 1 < len(hops) else self.target
                jump_transport = jump.get_transport()
                assert jump_transport is not None
                try:
                    sock = jump_transport.open_channel("direct-tcpip", (nxt.hostname, nxt.port), ("127.0.0.1", 0))
                except (paramiko.SSHException, OSError) as exc:
                    raise SSHConnectionError(
                        f"jump host {hop.known_hosts_name} could not open a tunnel to {nxt.known_hosts_name}: {exc}"
                    ) from exc
            client = _connect_client(self.target, known_hosts_file=self.known_hosts_file, policy=self.policy, sock=sock)
        except BaseException:
            for jump in reversed(jumps):
                jump.close()
            raise
        self._client = client
        self._jumps = jumps
        self.generation += 1
        log.debug(
            "clustrix.ssh_connected",
            host=self.target.hostname,
            port=self.target.port,
            user=self.target.user,
            via=[h.known_hosts_name for h in hops],
            generation=self.generation,
        )

    def _close_quietly(self) -> None:
        for closable in [self._sftp, self._client, *reversed(self._jumps)]:
            if closable is not None:
                try:
                    closable.close()
                except (OSError, EOFError, paramiko.SSHException):
                    pass
        self._sftp = None
        self._client = None
        self._jumps = []

    def close(self) -> None:
        with self._lock:
            self._close_quietly()

    def reset(self) -> None:
        """Drop the current link (after an error showed it is dead); the next use reconnects."""
        with self._lock:
            self._close_quietly()
