"""Network namespaces the testbeds make, and loopback gateways into them.

The project rule: servers listen on loopback or inside a network namespace a testbed
made, never on the machine's other addresses. SLURM's daemons, SGE's ``sge_qmaster``/
``sge_execd`` and OpenPBS bind ``0.0.0.0`` and have no option to bind one address, so
each of these testbeds runs its daemons in a namespace of its own
(``clustrix-slurm``, ``clustrix-sge``, ``clustrix-pbs``):

- :class:`Namespace` creates one (``ip netns add``, ``lo`` up and a veth pair that lives
  entirely inside it, for the non-loopback address OpenPBS and glibc's ``AI_ADDRCONFIG``
  want) and deletes it; :meth:`Namespace.enter` wraps a command so it runs inside
  (``nsenter --net``, *not* ``ip netns exec``, which remounts ``/sys`` and hides the
  cgroup mounts that slurmd's ``task/cgroup`` needs);
- :class:`Gateway` makes daemons inside reachable from the machine's own loopback: a
  daemon (:mod:`tests.testbed.gateway`) on ``127.0.0.1:PORT`` outside that forwards each
  connection to ``127.0.0.1:PORT`` inside. The daemons see every
  client as ``127.0.0.1``, exactly as when they ran outside, so the configuration files
  (``/etc/slurm``, SGE's ``act_qmaster``/``host_aliases``) stay the same and host-side
  clients (``sbatch``, ``qsub``, sessions of the sshd testbed) need no wrapper. Only
  127.0.0.1 ports show in ``ss -ltnp`` of the machine's namespace.

Measured on the 2-core project machine: ``qstat`` through the gateway took 45 ms, run
inside the namespace 47 ms (20 runs each); the gotchas met on the way are in
``docs/writing-a-scheduler-plugin.md`` ("Testbed daemons stay off the machine's network").
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import attrs

from tests.testbed.system import apt_install, pid_from_file, terminate, wait_for
from tests.testbed.system import succeeds as _succeeds

#: Gateway pid files, one folder per namespace.
RUN = Path("/run/clustrix-netns")
#: The gateway daemon (standard library only).
GATEWAY_SCRIPT = str(Path(__file__).with_name("gateway.py"))


def port_is_free(port: int) -> bool:
    """Nothing listens on ``127.0.0.1:port`` here (connections of a daemon just ended, in TIME_WAIT, do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _ip(argv: Sequence[str]) -> None:
    proc = subprocess.run(["ip", *argv], capture_output=True, text=True, check=False, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")


@attrs.frozen
class Namespace:
    """A named network namespace (``/run/netns/NAME``), optionally with an inside-only veth address."""

    name: str
    #: ``ADDRESS/PREFIX`` on a veth pair whose both ends stay inside (nothing leaves the namespace
    #: through it): a non-loopback address for daemons and resolvers that want one
    address: str | None = None
    #: the veth pair's names (both inside); by default derived from the namespace's name
    veth: tuple[str, str] | None = None

    @property
    def path(self) -> Path:
        return Path("/run/netns") / self.name

    @property
    def run_dir(self) -> Path:
        return RUN / self.name

    def exists(self) -> bool:
        return self.path.exists()

    @property
    def links(self) -> tuple[str, str]:
        """The veth pair's two names (both inside)."""
        return self.veth or (f"{self.name[:11]}-a", f"{self.name[:11]}-b")

    def up(self) -> None:
        """Create what is missing (idempotent): the namespace, ``lo`` up, the veth pair and its address.

        A namespace with only ``lo`` answers ``getaddrinfo("localhost")`` with nothing when the
        caller passes ``AI_ADDRCONFIG`` (glibc does not count loopback addresses), as slurmdbd
        and sacctmgr do: hence the inside-only address.
        """
        apt_install(["iproute2"])  # ip; nsenter is util-linux's (essential)
        if not self.exists():
            _ip(["netns", "add", self.name])
        _ip(["-n", self.name, "link", "set", "lo", "up"])
        inner, outer = self.links
        if self.address is not None and not _succeeds(["ip", "-n", self.name, "link", "show", inner]):
            _ip(["-n", self.name, "link", "add", inner, "type", "veth", "peer", "name", outer])
            _ip(["-n", self.name, "addr", "add", self.address, "dev", inner])
            _ip(["-n", self.name, "link", "set", inner, "up"])
            _ip(["-n", self.name, "link", "set", outer, "up"])
        self.run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)

    def down(self) -> None:
        """Delete the namespace (its veth pair goes with it); gateways into it are stopped first."""
        for pid_file in self.run_dir.glob("gateway-*.pid") if self.run_dir.exists() else ():
            self.gateway(int(pid_file.stem.removeprefix("gateway-"))).stop()
        if self.exists():
            _ip(["netns", "delete", self.name])
        if self.run_dir.exists() and not any(self.run_dir.iterdir()):
            self.run_dir.rmdir()

    def enter(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the namespace (same mounts, so cgroups and unix sockets are shared)."""
        return ["nsenter", f"--net={self.path}", *argv]

    def holds(self, pid: int | None) -> bool:
        """Whether process ``pid`` runs inside this namespace (not in the machine's own)."""
        if pid is None or not self.exists():
            return False
        try:
            inode = os.stat(self.path).st_ino
            return os.readlink(f"/proc/{pid}/ns/net") == f"net:[{inode}]"
        except OSError:
            return False

    def gateway(self, port: int) -> Gateway:
        return Gateway(namespace=self, port=port)


@attrs.frozen
class Gateway:
    """A daemon on ``127.0.0.1:port`` outside, forwarding each connection to ``127.0.0.1:port`` inside.

    :mod:`tests.testbed.gateway`, run by the system's ``python3`` with a pid file under
    :data:`RUN`, so it outlives the test session that started it, like the daemons behind it.
    """

    namespace: Namespace
    port: int

    @property
    def pid_file(self) -> Path:
        return self.namespace.run_dir / f"gateway-{self.port}.pid"

    def pid(self) -> int | None:
        """The gateway's pid while it runs (a pid the file names but another process reuses is not it)."""
        pid = pid_from_file(self.pid_file)
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0") if pid else []
        except OSError:
            return None
        # any checkout's gateway.py counts (another worktree's testbed code may have started it)
        script = any(part.endswith(b"/gateway.py") for part in command)
        return pid if script and command[-2:] == [str(self.namespace.path).encode(), str(self.port).encode()] else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self) -> None:
        """Start the gateway unless it runs; the port must be free on 127.0.0.1."""
        if self.running():
            return
        if not port_is_free(self.port):
            raise RuntimeError(
                f"127.0.0.1:{self.port} is taken outside the namespace {self.namespace.name} "
                f"(a daemon started outside it?): cannot open the gateway (see ss -ltnp)"
            )
        self.namespace.run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
        # started through sh and left to init: no child of this process, nothing to reap
        started = subprocess.run(
            ["setsid", "sh", "-c", '"$@" </dev/null >/dev/null 2>&1 & echo $!', "sh", python, GATEWAY_SCRIPT,
             str(self.namespace.path), str(self.port)],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )  # fmt: skip
        self.pid_file.write_text(started.stdout.strip() + "\n")
        wait_for(lambda: not port_is_free(self.port), timeout=10, what=f"gateway on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        terminate(self.pid(), timeout=10)
        self.pid_file.unlink(missing_ok=True)
