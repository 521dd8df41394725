"""``SSHTransport``: clustrix's :class:`clustrix.plugin.transport.Transport` over paramiko.

Commands run on exec channels, files move over the connection's SFTP session. An
operation that fails because the link dropped is retried once after reconnecting;
an operation that fails on a live link raises at once. Transports are pooled: one per
resolved target and host-key settings per process (:func:`get_transport`), shared by
threads; no scheduler keeps transports of its own.
"""

from __future__ import annotations

import os
import posixpath
import secrets
import select
import socket
import stat as stat_module
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import paramiko
import paramiko.agent

from clustrix.errors import CommandError
from clustrix.plugin.transport import CommandResult
from clustrix.remote import scripts as remote_script
from clustrix_ssh.command import render_command
from clustrix_ssh.connection import Connection
from clustrix_ssh.errors import SSHConnectionError
from clustrix_ssh.target import Target, load_ssh_config, resolve_target, ssh_config_path

T = TypeVar("T")

#: Failures that mean "the link is gone" when the connection is no longer active.
_LINK_ERRORS = (paramiko.SSHException, EOFError, OSError, socket.error)
_CHUNK = 1 << 20


class SSHTransport:
    """Run commands and move files on one SSH host; see :class:`clustrix.plugin.transport.Transport`."""

    def __init__(self, target: Target, *, known_hosts_file: str | None = None, host_key_policy: str = "reject") -> None:
        self.target = target
        self.host = target.alias
        self.connection = Connection(target, known_hosts_file=known_hosts_file, policy=host_key_policy)
        self._home: str | None = None
        self._home_generation = -1

    def __repr__(self) -> str:
        return f"SSHTransport({self.target.user}@{self.target.known_hosts_name})"

    # -- the retry-once rule -------------------------------------------------------------

    def _with_reconnect(self, operation: Callable[[], T]) -> T:
        """Run ``operation``; if it failed because the link died, reconnect and run it once more."""
        try:
            self.connection.client()
            return operation()
        except SSHConnectionError:
            raise
        except _LINK_ERRORS:
            if self.connection.is_active():
                raise
            self.connection.reset()
        return operation()

    # -- commands ----------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        check: bool = False,
    ) -> CommandResult:
        """Run ``argv`` remotely; every element, env value and the cwd are shell-quoted.

        With ``env``, the exports travel on stdin ahead of ``input`` (see
        :mod:`clustrix.remote.scripts`), so no value is in any process's arguments.
        """
        command = render_command(argv, env=env, cwd=None if cwd is None else self.expand(cwd))
        if env:
            data = remote_script.script_input(command, input or b"")
            command = render_command(list(remote_script.BOOTSTRAP_ARGV))
            result = self.run_shell(command, input=data, timeout=timeout, argv=tuple(argv))
            if check and not result.ok:
                raise CommandError(result)
            return result
        result = self.run_shell(command, input=input, timeout=timeout, argv=tuple(argv))
        if check and not result.ok:
            raise CommandError(result)
        return result

    def run_shell(
        self,
        command: str,
        *,
        input: bytes | None = None,
        timeout: float | None = None,
        argv: tuple[str, ...] | None = None,
    ) -> CommandResult:
        """Run a command line that is already shell code (scripts rendered by clustrix itself).

        A link that is down before the command starts is reopened and the command sent
        once more; a link that drops while the command runs is an error, because the
        command may or may not have run.
        """
        full_argv = argv or ("sh", "-c", command)
        code, out, err = self.run_bytes(command, input=input, timeout=timeout, argv=full_argv)
        return CommandResult(full_argv, code, out.decode(errors="replace"), err.decode(errors="replace"))

    def run_bytes(
        self,
        command: str,
        *,
        input: bytes | None = None,
        timeout: float | None = None,
        argv: tuple[str, ...] | None = None,
    ) -> tuple[int, bytes, bytes]:
        """Like :meth:`run_shell`, but stdout and stderr come back as raw bytes (binary results)."""

        def attempt() -> tuple[int, bytes, bytes]:
            channel = self.connection.open_command_channel()
            return self._exec(channel, command, input, timeout, argv or ("sh", "-c", command))

        return self._with_reconnect(attempt)

    def operations(self) -> dict[str, int]:
        """Command channels opened and SFTP requests sent on this host so far (each >= 1 round trip)."""
        return self.connection.counters.snapshot()

    def _exec(
        self,
        channel: paramiko.Channel,
        command: str,
        input: bytes | None,
        timeout: float | None,
        argv: tuple[str, ...],
    ) -> tuple[int, bytes, bytes]:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            if self.target.forward_agent:
                paramiko.agent.AgentRequestHandler(channel)
            channel.exec_command(command)
        except BaseException:
            channel.close()
            raise
        try:
            feeder = None
            if input:
                feeder = threading.Thread(target=_feed, args=(channel, input), daemon=True)
                feeder.start()
            else:
                channel.shutdown_write()
            out, err = bytearray(), bytearray()
            while True:
                if channel.recv_ready():
                    out += channel.recv(_CHUNK)
                    continue
                if channel.recv_stderr_ready():
                    err += channel.recv_stderr(_CHUNK)
                    continue
                if channel.exit_status_ready() and (channel.eof_received or channel.closed):
                    _drain(channel, out, err)  # EOF came after all data: what arrived since is buffered
                    break
                if not self.connection.is_active():
                    raise SSHConnectionError(
                        f"the SSH connection to {self.target.known_hosts_name} dropped while {argv[0]!r} ran; "
                        "it may or may not have completed"
                    )
                wait = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
                if wait <= 0:
                    raise subprocess.TimeoutExpired(list(argv), timeout or 0, bytes(out), bytes(err))
                select.select([channel], [], [], wait)
            code = channel.recv_exit_status()
            link = channel.get_transport()
            if code == -1 and (link is None or not link.is_active()):
                # paramiko closes every channel when the link dies, which looks like an exit
                # without a status: the command may or may not have run to the end
                raise SSHConnectionError(
                    f"the SSH connection to {self.target.known_hosts_name} dropped while {argv[0]!r} ran; "
                    "it may or may not have completed"
                )
            if feeder is not None:
                feeder.join(timeout=1)
        finally:
            channel.close()
        return code, bytes(out), bytes(err)

    # -- files ------------------------------------------------------------------

    def _sftp_call(self, operation: Callable[[paramiko.SFTPClient], T]) -> T:
        def attempt() -> T:
            with self.connection.sftp_lock:
                return operation(self.connection.sftp())

        return self._with_reconnect(attempt)

    def expand(self, remote_path: str) -> str:
        """``~`` and ``~/x`` become the remote home; other paths are returned unchanged."""
        if remote_path != "~" and not remote_path.startswith("~/"):
            return remote_path
        if self._home is None or self._home_generation != self.connection.generation:
            self._home = self._sftp_call(lambda sftp: sftp.normalize("."))
            self._home_generation = self.connection.generation
        return self._home if remote_path == "~" else posixpath.join(self._home, remote_path[2:])

    def write_bytes(self, remote_path: str, data: bytes, *, mode: int = 0o600) -> None:
        """Replace ``remote_path`` atomically: write a private temporary file, then rename it."""
        path = self.expand(remote_path)

        def write(sftp: paramiko.SFTPClient) -> None:
            _upload(sftp, path, lambda fh: fh.write(data), mode)

        self._sftp_call(write)

    def put(self, local_path: str | os.PathLike[str], remote_path: str) -> None:
        path = self.expand(remote_path)
        mode = stat_module.S_IMODE(os.stat(local_path).st_mode) & 0o700 or 0o600

        def copy(sftp: paramiko.SFTPClient) -> None:
            def body(fh: paramiko.SFTPFile) -> None:
                with open(local_path, "rb") as src:
                    while block := src.read(_CHUNK):
                        fh.write(block)

            _upload(sftp, path, body, mode)

        self._sftp_call(copy)

    def read_bytes(self, remote_path: str) -> bytes:
        path = self.expand(remote_path)

        def read(sftp: paramiko.SFTPClient) -> bytes:
            with sftp.open(path, "rb") as fh:
                fh.prefetch()
                data: bytes = fh.read()
                return data

        return self._sftp_call(read)

    def exists(self, remote_path: str) -> bool:
        try:
            self.stat(remote_path)
        except FileNotFoundError:
            return False
        return True

    def stat(self, remote_path: str) -> os.stat_result:
        path = self.expand(remote_path)
        return _stat_result(self._sftp_call(lambda sftp: sftp.stat(path)))

    def lstat(self, remote_path: str) -> os.stat_result:
        """Like :meth:`stat`, but a symbolic link is described itself, not followed."""
        path = self.expand(remote_path)
        return _stat_result(self._sftp_call(lambda sftp: sftp.lstat(path)))

    def listdir(self, remote_path: str) -> list[str]:
        path = self.expand(remote_path)
        return self._sftp_call(lambda sftp: sftp.listdir(path))

    def makedirs(self, remote_path: str, *, mode: int = 0o700) -> None:
        """Create ``remote_path`` and missing parents with ``mode``; an existing directory is left as it is."""
        path = self.expand(remote_path)
        self._sftp_call(lambda sftp: _makedirs(sftp, path, mode))

    def close(self) -> None:
        self.connection.close()


def _drain(channel: paramiko.Channel, out: bytearray, err: bytearray) -> None:
    while channel.recv_ready():
        out += channel.recv(_CHUNK)
    while channel.recv_stderr_ready():
        err += channel.recv_stderr(_CHUNK)


def _feed(channel: paramiko.Channel, data: bytes) -> None:
    # paramiko's sendall re-slices what is left after every packet: with bytes that is
    # quadratic (100 MB went at 1 MB/s); memoryview slices are free.
    try:
        channel.sendall(memoryview(data))  # type: ignore[arg-type]  # any buffer works; the stubs say bytes
        channel.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        pass  # the command ended early or the link dropped; the reader reports it


def _upload(sftp: paramiko.SFTPClient, path: str, body: Callable[[paramiko.SFTPFile], object], mode: int) -> None:
    directory, name = posixpath.split(path)
    tmp = posixpath.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
    try:
        with sftp.open(tmp, "wb") as fh:
            sftp.chmod(tmp, mode)  # before any byte is written: never readable by others
            fh.set_pipelined(True)
            body(fh)
        sftp.posix_rename(tmp, path)
    except BaseException:
        try:
            sftp.remove(tmp)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        raise


def _stat_result(attributes: paramiko.SFTPAttributes) -> os.stat_result:
    return os.stat_result(
        (
            attributes.st_mode or 0,
            0,
            0,
            1,
            attributes.st_uid or 0,
            attributes.st_gid or 0,
            attributes.st_size or 0,
            int(attributes.st_atime or 0),
            int(attributes.st_mtime or 0),
            int(attributes.st_mtime or 0),
        )
    )


def _makedirs(sftp: paramiko.SFTPClient, path: str, mode: int) -> None:
    try:
        attributes = sftp.stat(path)
    except FileNotFoundError:
        _create_dir(sftp, path, mode)
        sftp.chmod(path, mode)
        return
    if not stat_module.S_ISDIR(attributes.st_mode or 0):
        raise NotADirectoryError(f"{path} exists and is not a directory")


def _ensure_dir(sftp: paramiko.SFTPClient, path: str, mode: int) -> None:
    """Create ``path`` (and parents) if missing, leaving existing directories' modes alone."""
    try:
        sftp.stat(path)
    except FileNotFoundError:
        _create_dir(sftp, path, mode)


def _create_dir(sftp: paramiko.SFTPClient, path: str, mode: int) -> None:
    """Make the missing ``path`` after its parents; another process making it first is fine."""
    parent = posixpath.dirname(path.rstrip("/"))
    if parent and parent != path:
        _ensure_dir(sftp, parent, mode)
    try:
        sftp.mkdir(path, mode)
    except OSError:
        if not stat_module.S_ISDIR(sftp.stat(path).st_mode or 0):
            raise


# -- the per-process pool -------------------------------------------------------------

#: The one owner of SSH connections in a process: every scheduler gets its transport here.
_pool: dict[tuple[object, ...], SSHTransport] = {}
#: What each set of settings resolved to, so ``~/.ssh/config`` is parsed once per target
#: (again only when the file changes), not on every hook call.
_resolved: dict[tuple[object, ...], SSHTransport] = {}
_pool_lock = threading.Lock()


def _config_stamp(config_path: Path | None = None) -> tuple[str, int | None]:
    path = config_path or ssh_config_path()
    try:
        return str(path), path.stat().st_mtime_ns
    except OSError:
        return str(path), None


def pool_key(target: Target, *, known_hosts_file: str | None, host_key_policy: str) -> tuple[object, ...]:
    """Everything that decides what a connection may do: two settings share one only when all agree.

    The whole resolved target (user, host, port, identity files, password, jump hosts, the
    ssh config's known_hosts files, agent forwarding) and the host-key policy and file: a
    caller asking for ``host_key_policy="reject"`` or another key never gets a connection
    opened with other settings.
    """
    return (target, host_key_policy, known_hosts_file)


def get_transport(
    host: str,
    *,
    port: int | None = None,
    user: str | None = None,
    key_file: str | None = None,
    password: str | None = None,
    known_hosts_file: str | None = None,
    host_key_policy: str = "reject",
    forward_agent: bool = False,
    ssh_config_file: str | None = None,
) -> SSHTransport:
    """The process's shared transport for these settings, created on first use.

    ``ssh_config_file`` is read instead of ``~/.ssh/config`` (as ``ssh -F``).
    """
    config_path = Path(os.path.expanduser(ssh_config_file)) if ssh_config_file else None
    arguments = (
        host,
        port,
        user,
        key_file,
        password,
        known_hosts_file,
        host_key_policy,
        forward_agent,
        _config_stamp(config_path),
    )
    with _pool_lock:
        known = _resolved.get(arguments)
        if known is not None:
            return known
    target = resolve_target(
        host,
        port=port,
        user=user,
        key_file=key_file,
        password=password,
        forward_agent=forward_agent,
        ssh_config=None if config_path is None else load_ssh_config(config_path),
    )
    key = pool_key(target, known_hosts_file=known_hosts_file, host_key_policy=host_key_policy)
    with _pool_lock:
        transport = _pool.get(key)
        if transport is None:
            transport = SSHTransport(target, known_hosts_file=known_hosts_file, host_key_policy=host_key_policy)
            _pool[key] = transport
        _resolved[arguments] = transport
        return transport


def close_all() -> None:
    """Close every pooled connection (tests; the pool reconnects on next use)."""
    with _pool_lock:
        transports = list(_pool.values())
        _pool.clear()
        _resolved.clear()
    for transport in transports:
        transport.close()
    from clustrix_ssh import client, openssh

    openssh.close_all()
    client.forget()
