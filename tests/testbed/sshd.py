"""A private OpenSSH server on 127.0.0.1 for the ssh tests: real sshd, real keys, real user.

:func:`start_sshd` installs ``openssh-server`` if needed, creates the unprivileged user
``clustrix-test`` (unlocked, so ``UsePAM no`` lets it log in with a key), generates a
host key and a client ed25519 key in a private directory, writes a pinned
``known_hosts`` for the client and starts ``sshd -D`` on a port that was free at start
time. Nothing listens beyond loopback; nothing outside the directory is configured
except the test user and ``/run/sshd``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from tests.testbed.system import apt_install, free_port, port_is_free, wait_for

TEST_USER = "clustrix-test"
SSHD = "/usr/sbin/sshd"
TESTBED_ROOT = Path("/var/lib/clustrix-testbed")


def ensure_user(name: str = TEST_USER) -> pwd.struct_passwd:
    """Create ``name`` with a home if missing and unlock it (``useradd`` leaves ``!`` in shadow)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            [shutil.which("useradd") or "/usr/sbin/useradd", "-m", "-s", "/bin/bash", name],
            check=True,
            capture_output=True,
        )
    subprocess.run([shutil.which("usermod") or "/usr/sbin/usermod", "-p", "*", name], check=True, capture_output=True)
    return pwd.getpwnam(name)


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )


def render_sshd_config(
    directory: Path, port: int, user: str, extra_lines: tuple[str, ...] = (), overrides: tuple[str, ...] = ()
) -> str:
    """The sshd_config of the testbed: key auth only, one user, loopback, files in ``directory``.

    ``overrides`` come first (sshd keeps the first value of a keyword), ``extra_lines`` last.
    """
    return "\n".join(
        [
            *overrides,
            f"ListenAddress 127.0.0.1:{port}",
            f"HostKey {directory}/ssh_host_ed25519_key",
            f"PidFile {directory}/sshd.pid",
            f"AuthorizedKeysFile {directory}/authorized_keys/%u",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin no",
            f"AllowUsers {user}",
            "UsePAM no",
            "AllowAgentForwarding yes",
            "X11Forwarding no",
            "MaxSessions 64",
            "MaxStartups 64:30:128",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            *extra_lines,
            "",
        ]
    )


@attrs.define
class SSHServer:
    """A running testbed sshd; ``stop()``/``restart()`` drop every open connection too."""

    host: str
    port: int
    user: str
    key_file: str
    known_hosts: str
    directory: str
    home: str
    #: runs sshd elsewhere, e.g. inside a network namespace (``nsenter --net=...``); its port is then
    #: that namespace's, and a gateway outside forwards the same port number to it
    command_prefix: tuple[str, ...] = ()
    #: the sshd program to run; a symlink to sshd under another name makes it use that name's PAM service
    program: str = SSHD
    _process: subprocess.Popen[bytes] | None = None

    @property
    def host_public_key(self) -> str:
        return (Path(self.directory) / "ssh_host_ed25519_key.pub").read_text().strip()

    def config(self, **extra: Any) -> dict[str, Any]:
        """clustrix configuration keys that reach this server (no ``~/.ssh`` needed)."""
        return {
            "cluster_type": "ssh",
            "cluster_host": self.host,
            "cluster_port": self.port,
            "username": self.user,
            "key_file": self.key_file,
            "known_hosts_file": self.known_hosts,
            **extra,
        }

    def start(self) -> None:
        if not self.command_prefix and listening(self.host, self.port):
            raise RuntimeError(f"port {self.port} on 127.0.0.1 is busy: refusing to start a second sshd on it")
        log = Path(self.directory) / "sshd.log"
        log.write_text("")
        with open(log, "ab") as log_file:  # the child keeps its own copy of the descriptor
            self._process = subprocess.Popen(
                [*self.command_prefix, self.program, "-D", "-e", "-f", str(Path(self.directory) / "sshd_config")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                start_new_session=True,
            )
        expected = f"Server listening on 127.0.0.1 port {self.port}"

        def ready() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self._process.returncode}: {log.read_text()[-2000:]}")
            return expected in log.read_text()

        wait_for(ready, timeout=10, what=f"sshd listening on 127.0.0.1:{self.port}")

    def _connection_pids(self) -> list[int]:
        """Per-connection sshd processes forked by our listener (children, grandchildren)."""
        if self._process is None:
            return []
        parents = {self._process.pid}
        found: list[int] = []
        changed = True
        while changed:
            changed = False
            for entry in os.listdir("/proc"):
                if not entry.isdigit() or int(entry) in found:
                    continue
                try:
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                    comm = Path(f"/proc/{entry}/comm").read_text().strip()
                except (FileNotFoundError, ProcessLookupError, IndexError):
                    continue
                if int(fields[1]) in parents and comm.startswith("sshd"):
                    found.append(int(entry))
                    parents.add(int(entry))
                    changed = True
        return found

    def stop(self) -> None:
        """Stop the listener and kill its open connections (clients see the link drop)."""
        if self._process is None:
            return
        connections = self._connection_pids()
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for pid in connections:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._process = None
        if self.command_prefix:  # the listener was elsewhere; its process has exited
            return
        wait_for(lambda: not listening(self.host, self.port), timeout=10, what=f"port {self.port} closed")

    def restart(self) -> None:
        """Stop and start again on the same port with the same keys."""
        self.stop()
        self.start()

    def run_as_user(self, script: str) -> subprocess.CompletedProcess[str]:
        """Run a shell script as the test user on this machine, bypassing ssh (test assertions)."""
        return subprocess.run(
            [shutil.which("runuser") or "/usr/sbin/runuser", "-u", self.user, "--", "sh", "-c", script],
            capture_output=True,
            text=True,
            check=False,
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": self.home},
        )

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_sshd(
    user: str = TEST_USER,
    *,
    command_prefix: tuple[str, ...] = (),
    extra_config: tuple[str, ...] = (),
    override_config: tuple[str, ...] = (),
    prepare: Callable[[Path, int], str] | None = None,
) -> SSHServer:
    """Install what is missing, prepare keys and the user, and start sshd on a free port.

    ``prepare(directory, port)``, if given, runs before sshd starts (it may write files in the
    testbed's directory) and returns the program to run: a symlink to sshd, for its own PAM service.
    """
    apt_install(["openssh-server", "openssh-client"])
    if os.geteuid() != 0:
        raise RuntimeError("the sshd testbed needs root (it creates a user and runs sshd)")
    account = ensure_user(user)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    # StrictModes refuses authorized_keys under a group/world-writable dir such as /tmp,
    # and sshd reads the file as the user: a root-owned 0755 parent satisfies both.
    TESTBED_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
    TESTBED_ROOT.chmod(0o755)
    directory = Path(tempfile.mkdtemp(prefix="sshd-", dir=TESTBED_ROOT))
    directory.chmod(0o755)
    _keygen(directory / "ssh_host_ed25519_key", "clustrix-testbed-host")
    _keygen(directory / "client_ed25519", "clustrix-testbed-client")
    keys_dir = directory / "authorized_keys"
    keys_dir.mkdir(mode=0o755)
    (keys_dir / user).write_text((directory / "client_ed25519.pub").read_text())
    (keys_dir / user).chmod(0o644)
    port = free_port()
    if not port_is_free(port):
        raise RuntimeError(f"port {port} was free a moment ago and is busy now")
    (directory / "sshd_config").write_text(render_sshd_config(directory, port, user, extra_config, override_config))
    host_key = (directory / "ssh_host_ed25519_key.pub").read_text().split()
    known_hosts = directory / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    server = SSHServer(
        host="127.0.0.1",
        port=port,
        user=user,
        key_file=str(directory / "client_ed25519"),
        known_hosts=str(known_hosts),
        directory=str(directory),
        home=account.pw_dir,
        command_prefix=command_prefix,
    )
    if prepare is not None:
        server.program = prepare(directory, port)
    server.start()
    return server


def listening(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port`` (sockets in TIME_WAIT do not count)."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False
