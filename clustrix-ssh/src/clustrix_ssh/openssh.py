"""``OpenSSHTransport``: clustrix's :class:`clustrix.plugin.transport.Transport` over the system ``ssh``.

Every command is one ``ssh`` process multiplexed over a master connection: the user's own
(``clustrix login HOST``, or the ``ControlPath`` of their ssh_config) or, for a host that
needs no typing, one this transport opens itself in batch mode. ``ssh`` reads the whole
ssh_config (Host aliases, ``Match``, ``ProxyJump``, ``CertificateFile``, GSSAPI) and checks
host keys as it always does; clustrix never turns that off. ``BatchMode=yes`` means it never
prompts: a host that needs a code and has no live login fails at once with the fix.

Only ``ssh`` runs: no ``scp``/``sftp``. Scripts travel on stdin as with every transport
(:mod:`clustrix.remote.scripts`), payloads and results stream through stdin and stdout,
and no secret is ever in a process's arguments.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence

from clustrix.errors import CommandError
from clustrix.log import get_logger
from clustrix.plugin.transport import CommandResult
from clustrix.remote import scripts as remote_script
from clustrix_ssh import login
from clustrix_ssh.command import render_command
from clustrix_ssh.errors import ChangedHostKeyError, LoginRequiredError, SSHConnectionError, UnknownHostKeyError

log = get_logger("clustrix.ssh")

#: ``ControlPersist`` of a master this transport opens itself (idle time before it ends).
AUTO_PERSIST = "10m"
CONNECT_TIMEOUT = 15
#: After a failed attempt to open a master, commands go on without one for this long.
MASTER_RETRY_SECONDS = 10.0
#: ``ssh``'s own exit status for its errors (a remote command may exit 255 too: see :func:`_ssh_failure`).
SSH_ERROR = 255
_LINK_WORDS = (
    "Connection closed by",
    "Connection reset",
    "Connection refused",
    "Connection timed out",
    "closed by remote host",
    "Broken pipe",
    "client_loop:",
    "mux_client",
    "kex_exchange_identification",
    "Could not resolve hostname",
    "No route to host",
    "Network is unreachable",
    "ssh: connect to host",
    "ssh_exchange_identification",
    "Timeout, server",
)
_DENIED_WORDS = ("Permission denied", "Too many authentication failures", "No more authentication methods")

_STAT_SCRIPT = (
    'if [ -e "$1" ]; then stat -L -c "%f %u %g %s %X %Y %Z" -- "$1" 2>/dev/null '
    '|| stat -L -f "%Xp %u %g %z %a %m %c" -- "$1"; else echo missing; fi'
)


class OpenSSHTransport:
    """Run commands on one host through the system ``ssh``; see :class:`clustrix.plugin.transport.Transport`."""

    def __init__(self, target: login.LoginTarget) -> None:
        self.target = target
        self.host = target.host
        self._home: str | None = None
        self._lock = threading.Lock()
        self._master_lock = threading.Lock()
        self._next_master_try = 0.0
        self._opened_master = False
        self.commands = 0
        self._base: list[str] | None = None

    def __repr__(self) -> str:
        return f"OpenSSHTransport({self.target.host})"

    # -- the ssh command line ------------------------------------------------------------

    def _own_socket(self) -> str | None:
        """clustrix's socket when the user's ssh_config has no ControlPath of its own, else None."""
        return None if login.user_control_path(self.target) is not None else login.control_path(self.target)

    def _argv(self, command: str) -> list[str]:
        if self._base is None:
            self._base = [
                login.ssh_binary(),
                *self.target.ssh_options(),
                *login.connection_options(self.target),
                "-o",
                "BatchMode=yes",
                "-o",
                f"ConnectTimeout={CONNECT_TIMEOUT}",
                "-o",
                "LogLevel=ERROR",
                "-T",
            ]
        control: list[str] = []
        own = self._own_socket()
        if own is not None:
            self._ensure_master(own)
            # the master is login.open_master's (or none): a command never becomes one itself
            control = ["-o", "ControlMaster=no", "-o", f"ControlPath={own}"]
        elif not os.path.exists(login.control_path(self.target)):
            control = []  # the user's ControlMaster/ControlPath lines govern
        else:
            control = ["-o", "ControlMaster=no", "-o", f"ControlPath={login.control_path(self.target)}"]
        return [*self._base, *control, "--", self.target.host, command]

    def _ensure_master(self, socket_path: str) -> None:
        """Open clustrix's master in batch mode when none is live (a host that asks for nothing)."""
        if os.path.exists(socket_path):
            return
        with self._master_lock:
            if os.path.exists(socket_path) or time.monotonic() < self._next_master_try:
                return
            try:
                login.open_master(self.target, persist=AUTO_PERSIST, interactive=False, timeout=CONNECT_TIMEOUT * 4)
            except (SSHConnectionError, subprocess.TimeoutExpired) as exc:
                # the command then goes without a master and reports what the login lacks
                self._next_master_try = time.monotonic() + MASTER_RETRY_SECONDS
                log.debug("clustrix.ssh_master_failed", host=self.host, error=str(exc))
                return
            self._opened_master = True
            log.debug("clustrix.ssh_master_opened", host=self.host, control_path=socket_path)

    # -- commands ----------------------------------------------------------------------------

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
        """Run ``argv`` remotely; env values travel on stdin ahead of ``input``, never in arguments."""
        command = render_command(argv, env=env, cwd=None if cwd is None else self.expand(cwd))
        data = input
        if env:
            data = remote_script.script_input(command, input or b"")
            command = render_command(list(remote_script.BOOTSTRAP_ARGV))
        code, out, err = self.run_bytes(command, input=data, timeout=timeout, argv=tuple(argv))
        result = CommandResult(tuple(argv), code, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and not result.ok:
            raise CommandError(result)
        return result

    def run_shell(self, command: str, *, input: bytes | None = None, timeout: float | None = None) -> CommandResult:
        """Run a command line that is already shell code (scripts rendered by clustrix itself)."""
        code, out, err = self.run_bytes(command, input=input, timeout=timeout)
        return CommandResult(("sh", "-c", command), code, out.decode(errors="replace"), err.decode(errors="replace"))

    def run_bytes(
        self,
        command: str,
        *,
        input: bytes | None = None,
        timeout: float | None = None,
        argv: tuple[str, ...] | None = None,
    ) -> tuple[int, bytes, bytes]:
        """Run the shell command line ``command`` remotely; exit code, stdout and stderr as raw bytes.

        A connection failure (no login, the master gone, the link dropped) raises
        :class:`SSHConnectionError`, as the paramiko transport does, so the poller keeps waiting.
        """
        full_argv = argv or ("sh", "-c", command)
        process = subprocess.Popen(
            self._argv(command),
            stdin=subprocess.PIPE if input else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # its own session: a Ctrl-C at the terminal reaches clustrix (which holds it where a command
            # must finish, e.g. a submit being recorded), never ssh directly; and no terminal to prompt on
            start_new_session=True,
        )
        with self._lock:
            self.commands += 1
        try:
            out, err = process.communicate(input or None, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            raise subprocess.TimeoutExpired(list(full_argv), timeout or 0, out, err) from None
        except BaseException:
            process.kill()
            process.wait()
            raise
        err = self._clean_stderr(err)
        if process.returncode == SSH_ERROR:
            failure = self._ssh_failure(err, out, full_argv)
            if failure is not None:
                raise failure
        return process.returncode, out, err

    def _clean_stderr(self, err: bytes) -> bytes:
        """Drop ssh's note about a stale socket of ours (and remove the socket, so a new master can be opened)."""
        if b"Control socket connect(" not in err:
            return err
        kept = []
        for line in err.splitlines(keepends=True):
            if line.startswith(b"Control socket connect("):
                path = line[len(b"Control socket connect(") :].split(b")", 1)[0].decode(errors="replace")
                if os.path.dirname(path) == str(login.control_dir()):
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
                continue
            kept.append(line)
        return b"".join(kept)

    def _ssh_failure(self, err: bytes, out: bytes, argv: Sequence[str]) -> Exception | None:
        """The error for an ``ssh`` that failed itself (exit 255 with its own words), or None for a remote 255."""
        text = err.decode(errors="replace").strip()
        host = self.target.host
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
            return ChangedHostKeyError(
                f"the host key of {host} has CHANGED (ssh refused it; this may be a man-in-the-middle attack, or "
                f"the host was reinstalled). clustrix refuses to connect under every host_key_policy: {text}"
            )
        if "Host key verification failed" in text or "host key is known for" in text:
            return UnknownHostKeyError(
                f"ssh could not verify the host key of {host}: {text}\n"
                f"Check the fingerprint with the host's administrator and add it to your known_hosts "
                f"(ssh-keyscan HOST >> ~/.ssh/known_hosts), or log in once with `ssh {host}` and accept it; "
                f'host_key_policy="accept-new" records new hosts on first use'
            )
        if any(word in text for word in _DENIED_WORDS):
            return LoginRequiredError(
                f"no usable login for {host}: ssh may not prompt here (BatchMode) and said: {text}\n"
                f"Log in once with `clustrix login {host}` (type the code there; every clustrix process then "
                f"uses that login), or add ControlMaster/ControlPath/ControlPersist lines for {host} to "
                f"~/.ssh/config and log in with ssh (see docs/ssh-setup.md)"
            )
        if not out and any(word in text for word in _LINK_WORDS):
            return SSHConnectionError(
                f"the SSH connection to {host} failed or dropped while {argv[0]!r} ran (it may or may not have "
                f"completed): {text}"
            )
        return None

    def operations(self) -> dict[str, int]:
        """Commands run on this host so far (each at least one round trip); no SFTP here."""
        with self._lock:
            return {"commands": self.commands, "sftp_requests": 0}

    # -- paths and files, all through commands ---------------------------------------------

    def expand(self, remote_path: str) -> str:
        """``~`` and ``~/x`` become the remote home; other paths are returned unchanged."""
        if remote_path != "~" and not remote_path.startswith("~/"):
            return remote_path
        if self._home is None:
            code, out, err = self.run_bytes("cd && pwd -P")
            home = out.decode(errors="replace").strip()
            if code != 0 or not home.startswith("/"):
                raise SSHConnectionError(f"cannot find the home directory on {self.host}: {err.decode().strip()}")
            self._home = home
        return self._home if remote_path == "~" else posixpath.join(self._home, remote_path[2:])

    def _script(self, script: str, *args: str, input: bytes | None = None) -> tuple[int, bytes, bytes]:
        return self.run_bytes(shlex.join(["sh", "-c", script, "sh", *args]), input=input)

    def stat(self, remote_path: str) -> os.stat_result:
        path = self.expand(remote_path)
        code, out, err = self._script(_STAT_SCRIPT, path)
        words = out.decode(errors="replace").split()
        if code == 0 and words == ["missing"]:
            raise FileNotFoundError(2, "No such file or directory", path)
        if code != 0 or len(words) != 7:
            raise OSError(f"cannot stat {path} on {self.host}: {err.decode(errors='replace').strip()}")
        mode, uid, gid, size, atime, mtime, ctime = (int(words[0], 16), *(int(w) for w in words[1:]))
        return os.stat_result((mode, 0, 0, 1, uid, gid, size, atime, mtime, ctime))

    def exists(self, remote_path: str) -> bool:
        try:
            self.stat(remote_path)
        except FileNotFoundError:
            return False
        return True

    def write_bytes(self, remote_path: str, data: bytes, *, mode: int = 0o600) -> None:
        """Replace ``remote_path`` atomically: a private temporary file (umask 077), then ``mv``."""
        path = self.expand(remote_path)
        script = (
            'umask 077; t="$1.$$.tmp"; cat > "$t" && chmod "$2" "$t" && mv -f -- "$t" "$1" || { rm -f "$t"; exit 1; }'
        )
        code, _, err = self._script(script, path, f"{mode:o}", input=data)
        if code != 0:
            raise OSError(f"cannot write {path} on {self.host}: {err.decode(errors='replace').strip()}")

    def read_bytes(self, remote_path: str) -> bytes:
        path = self.expand(remote_path)
        code, out, err = self._script('exec cat -- "$1"', path)
        if code != 0:
            message = err.decode(errors="replace").strip()
            if "No such file" in message:
                raise FileNotFoundError(2, "No such file or directory", path)
            raise OSError(f"cannot read {path} on {self.host}: {message}")
        return out

    def close(self) -> None:
        """End the master this transport opened itself (a ``clustrix login`` master stays)."""
        if self._opened_master:
            self._opened_master = False
            try:
                login.close_master(self.target)
            except (SSHConnectionError, OSError, subprocess.TimeoutExpired):
                pass


# -- the per-process pool -------------------------------------------------------------

_pool: dict[tuple[object, ...], OpenSSHTransport] = {}
_pool_lock = threading.Lock()


def pool_key(target: login.LoginTarget) -> tuple[object, ...]:
    """Everything that decides what a connection may do, as with the paramiko pool's key.

    The destination as ssh resolves it (user, host name, port, jump hosts), the ssh_config
    file, the key, the host-key file and policy, agent forwarding: two settings share one
    transport only when all agree.
    """
    values = login.resolve(target)
    resolved = tuple(values.get(k, "") for k in ("user", "hostname", "port", "proxyjump", "proxycommand"))
    return (
        resolved,
        target.config_file,
        target.key_file,
        target.known_hosts_file,
        target.host_key_policy,
        target.forward_agent,
    )


def get_transport(target: login.LoginTarget) -> OpenSSHTransport:
    """The process's shared OpenSSH transport for ``target``, created on first use."""
    key = pool_key(target)
    with _pool_lock:
        transport = _pool.get(key)
        if transport is None:
            transport = _pool[key] = OpenSSHTransport(target)
        return transport


def close_all() -> None:
    """Close every pooled transport (and the masters they opened themselves)."""
    with _pool_lock:
        transports = list(_pool.values())
        _pool.clear()
    for transport in transports:
        transport.close()
