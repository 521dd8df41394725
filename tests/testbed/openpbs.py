"""A real single-node OpenPBS for the tests, inside a private network namespace.

OpenPBS binds 0.0.0.0 (server 15001, mom 15002/15003, comm 17001, datastore 15007)
and refuses to start when its host name resolves only to 127.x, so the whole complex
(server, scheduler, comm, mom and its PostgreSQL datastore) runs in the network
namespace ``clustrix-pbs`` whose only non-loopback address (10.254.254.1) sits on a
veth pair that lives entirely inside it, with ``/etc/hosts`` replaced by a private
file in a private mount namespace (:func:`inns`). The machine's own addresses and its
``/etc/hosts`` are never touched.

:func:`build` compiles OpenPBS from the source snapshot (``openpbs-<commit>.tar.gz``)
once: the installed tree is cached under ``/var/cache/clustrix-testbed/<tarball name>``,
so a machine that built it once starts in seconds. :func:`start` brings the complex up
(or reuses a healthy one): jobs run as the unprivileged ``clustrix-test`` user,
``$enforce mem`` is on (a job over its memory ends with Exit_status -27), there are two
queues (``workq``, the default, and ``short`` with a 5-minute walltime limit) and job
history is on (``qstat -x``).

Tests outside the namespace talk to PBS through :class:`NetnsTransport` (the
"local" transport: every command runs inside the namespace as the test user) or over
SSH through :func:`start_ssh` (an sshd inside the namespace, reached through a
gateway on 127.0.0.1, :class:`tests.testbed.netns.Gateway`). The PBS plugin sees an ordinary transport either way.

Measured on the project's 2-core machines: a cold build takes 4.5 to 10 minutes (more under
load, plus 1 to 3 minutes of apt on a bare image), the first start 18 s, a warm start 5 s, a
healthy complex is reused in 0.1 s.

Run ``python -m tests.testbed.openpbs build|start|stop|status`` by hand.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import attrs
import clustrix_openpbs_netns as netns_plugin
from clustrix_openpbs_netns import NetnsTransport

from clustrix.plugin.transport import CommandResult
from tests.testbed import sshd
from tests.testbed.netns import Gateway, Namespace
from tests.testbed.system import apt_install, pid_from_file, port_is_free, wait_for

#: What the build needs (OpenPBS's INSTALL list for Debian, bookworm names) and what runs it.
BUILD_PACKAGES = (
    "gcc", "g++", "make", "libtool", "autoconf", "automake", "perl", "swig",
    "libhwloc-dev", "libx11-dev", "libxt-dev", "libxext-dev", "libxft-dev", "libedit-dev",
    "libical-dev", "libncurses-dev", "libexpat1-dev", "libssl-dev", "libcjson-dev",
    "python3-dev", "tcl-dev", "tk-dev", "postgresql-server-dev-all",
    "postgresql", "postgresql-contrib", "python3", "expat", "libedit2", "libical3", "libcjson1",
    "tcl", "tk", "procps", "iproute2", "util-linux", "openssh-server",
)  # fmt: skip

CACHE_ROOT = Path(os.environ.get("CLUSTRIX_TESTBED_CACHE", "/var/cache/clustrix-testbed"))
#: Compiled into the binaries (configure --with-pbs-conf-file / --with-pbs-server-home).
STATE = Path("/var/lib/clustrix-testbed/openpbs")
#: The binaries read it from the compiled-in path; PBS's shell scripts read ``$PBS_CONF_FILE``
#: (else ``/etc/pbs.conf``), so every command run here gets that variable.
CONF = STATE / "pbs.conf"
PBS_HOME = STATE / "spool"
RUN = Path("/run/clustrix-openpbs")
HOSTS = RUN / "hosts"
#: A shared mount point: a file system the tests mount under it (a tiny full tmpfs) is seen by the
#: daemons' mount namespaces too (slaves of this one, see :func:`inns`), so jobs and sshd see it.
MOUNTS = RUN / "mounts"
NETNS = "clustrix-pbs"
ADDRESS = "10.254.254.1"
#: PBS refuses a host name that resolves only to 127.x: the namespace has this address on an inside-only veth pair
NAMESPACE = Namespace(NETNS, address=f"{ADDRESS}/24", veth=("pbsa", "pbsb"))
JOB_USER = sshd.TEST_USER
#: The second queue: ``queue="short"`` is tested for real; its walltime limit is 5 minutes.
SHORT_QUEUE = "short"
#: ``max_array_size`` set on the server, so reading it is tested against a value that is not PBS's default.
MAX_ARRAY_SIZE = 2000
#: ``cluster_host`` that means "this machine, inside the OpenPBS namespace, as the test user"
#: (served by the test-only plugin ``tests/plugins/clustrix-openpbs-netns``).
NETNS_HOST = netns_plugin.HOST


def tarball() -> Path:
    """The OpenPBS source snapshot: ``$CLUSTRIX_OPENPBS_TARBALL`` or ``shared/openpbs/openpbs-*.tar.gz``."""
    explicit = os.environ.get("CLUSTRIX_OPENPBS_TARBALL")
    if explicit:
        return Path(explicit)
    root = Path(__file__).resolve().parents[2]
    for pattern in (str(root.parent / "shared/openpbs/openpbs-*.tar.gz"), "/work/shared/openpbs/openpbs-*.tar.gz"):
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[-1])
    raise FileNotFoundError(
        "no OpenPBS source snapshot: set CLUSTRIX_OPENPBS_TARBALL to openpbs-<commit>.tar.gz "
        "(see shared/openpbs/README.md)"
    )


def prefix_for(source: Path) -> Path:
    """The install prefix (and cache entry) for one snapshot: named after the tarball."""
    return CACHE_ROOT / source.name.removesuffix(".tar.gz")


@attrs.frozen
class OpenPBS:
    """A running complex: where it is installed, its host name, queues and the job user."""

    prefix: Path
    host: str
    user: str = JOB_USER
    queue: str = "workq"
    short_queue: str = SHORT_QUEUE
    max_array_size: int = MAX_ARRAY_SIZE
    built_seconds: float = 0.0
    bring_up_seconds: float = 0.0
    reused: bool = False

    @property
    def bin_dir(self) -> str:
        return str(self.prefix / "bin")

    @property
    def path(self) -> str:
        return f"{self.prefix}/bin:/usr/local/bin:/usr/bin:/bin"

    def run(self, argv: Sequence[str], *, as_user: bool = True, check: bool = True) -> CommandResult:
        """Run a command inside the namespace (as the job user by default)."""
        return self.transport().run(argv, check=check) if as_user else _run_inns(self, argv, check=check)

    def settings(self) -> dict[str, str]:
        """What the transport plugin needs to reach this complex (written to its settings file)."""
        return {"netns": NETNS, "hosts": str(HOSTS), "user": self.user, "path": self.path, "conf": str(CONF)}

    def transport(self) -> NetnsTransport:
        return NetnsTransport(self.settings())


# ---------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------


def _run(argv: Sequence[str], *, timeout: float = 1800, **kw: object) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
        list(argv), capture_output=True, text=True, check=False, timeout=timeout, **kw
    )
    if result.returncode != 0:
        tail = (result.stdout[-3000:] + result.stderr[-3000:]).strip()
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}:\n{tail}")
    return result


def build(source: Path | None = None) -> tuple[Path, float]:
    """Build and install OpenPBS unless the cache has it; returns the prefix and the seconds spent."""
    source = source or tarball()
    prefix = prefix_for(source)
    marker = prefix / ".clustrix-installed"
    if marker.exists():
        return prefix, 0.0
    began = time.monotonic()
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / "openpbs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be building the same tree
        if marker.exists():
            return prefix, time.monotonic() - began
        apt_install(BUILD_PACKAGES)
        # configure must find Debian's python3, not a pyenv shim or a venv's interpreter
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C"}
        with tempfile.TemporaryDirectory(prefix="openpbs-build-") as work:
            _run(["tar", "-xzf", str(source), "-C", work])
            tree = Path(work) / "openpbs"
            _run(["./autogen.sh"], cwd=tree, env=env)
            _run(
                [
                    "./configure",
                    f"--prefix={prefix}",
                    "--with-python=/usr",
                    f"--with-pbs-conf-file={CONF}",
                    f"--with-pbs-server-home={PBS_HOME}",
                ],
                cwd=tree,
                env=env,
            )
            _run(["make", f"-j{os.cpu_count() or 2}"], cwd=tree, env=env)
            _run(["make", "install"], cwd=tree, env=env)
        for helper in ("pbs_iff", "pbs_rcp"):  # setuid root, as pbs_postinstall makes them
            (prefix / "sbin" / helper).chmod(0o4755)
        marker.write_text(f"{source.name}\n")
    return prefix, time.monotonic() - began


# ---------------------------------------------------------------------------
# the network namespace
# ---------------------------------------------------------------------------


def host_name() -> str:
    return socket.gethostname().split(".")[0]


def netns_up() -> None:
    """Create the namespace and its private hosts file (idempotent)."""
    NAMESPACE.up()
    RUN.mkdir(mode=0o755, parents=True, exist_ok=True)
    name = host_name()
    HOSTS.write_text(f"127.0.0.1\tlocalhost\n{ADDRESS}\t{name}\n")
    HOSTS.chmod(0o644)


def _shared_peer_group(mountinfo: str, target: Path) -> str | None:
    """The ``shared:N`` or ``master:N`` tag of the mount at ``target`` in a mountinfo text, if any."""
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 6 and fields[4] == str(target):
            tags = fields[6 : fields.index("-")]
            return next((t for t in tags if t.startswith(("shared:", "master:"))), None)
    return None


def shared_mounts_up() -> None:
    """Make :data:`MOUNTS` a shared mount point (a bind mount onto itself), once per boot."""
    MOUNTS.mkdir(mode=0o755, parents=True, exist_ok=True)
    if _shared_peer_group(Path("/proc/self/mountinfo").read_text(), MOUNTS) is None:
        _run(["mount", "--bind", str(MOUNTS), str(MOUNTS)])
        _run(["mount", "--make-shared", str(MOUNTS)])


def daemons_see_new_mounts() -> bool:
    """Whether the running mom receives mounts made under :data:`MOUNTS` (started since it was shared)."""
    try:
        pid = int((PBS_HOME / "mom_priv" / "mom.lock").read_text().split()[0])
        tag = _shared_peer_group(Path(f"/proc/{pid}/mountinfo").read_text(), MOUNTS)
    except (OSError, ValueError, IndexError):
        return False
    return tag is not None and tag.startswith("master:")


def inns(argv: Sequence[str]) -> list[str]:
    """``argv`` run inside the namespace with the private hosts file (see :func:`clustrix_openpbs_netns.inns`)."""
    return netns_plugin.inns(argv, netns=NETNS, hosts=str(HOSTS))


def _run_inns(bed: OpenPBS, argv: Sequence[str], *, check: bool = True, timeout: float = 120) -> CommandResult:
    env = {
        "PATH": f"{bed.prefix}/bin:{bed.prefix}/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "PBS_CONF_FILE": str(CONF),
    }
    proc = subprocess.run(inns(argv), capture_output=True, text=True, env=env, timeout=timeout, check=False)
    result = CommandResult(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
    if check and not result.ok:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return result


# ---------------------------------------------------------------------------
# the complex
# ---------------------------------------------------------------------------


def render_pbs_conf(prefix: Path, host: str) -> str:
    return "\n".join(
        [
            f"PBS_EXEC={prefix}",
            f"PBS_HOME={PBS_HOME}",
            f"PBS_SERVER={host}",
            "PBS_START_SERVER=1",
            "PBS_START_SCHED=1",
            "PBS_START_COMM=1",
            "PBS_START_MOM=1",
            "PBS_CORE_LIMIT=unlimited",
            "PBS_SCP=/usr/bin/scp",
            "",
        ]
    )


#: Lines the mom config must have: memory overruns are real (Exit_status -27), and mom checks
#: usage every 1-2 s (defaults 10-120 s), so a short overrun is caught and walltime kills are prompt.
MOM_CONFIG_LINES = ("$enforce mem", "$min_check_poll 1", "$max_check_poll 2")

QMGR_SETUP = f"""set server flatuid = true
set server job_history_enable = true
set server scheduler_iteration = 10
set server max_array_size = {MAX_ARRAY_SIZE}
create queue {SHORT_QUEUE} queue_type = execution
set queue {SHORT_QUEUE} resources_max.walltime = 00:05:00
set queue {SHORT_QUEUE} enabled = true
set queue {SHORT_QUEUE} started = true
"""


def _node_free(bed: OpenPBS) -> bool:
    try:
        result = _run_inns(bed, ["pbsnodes", "-a"], check=False, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return result.ok and "state = free" in result.stdout


def healthy(bed: OpenPBS) -> bool:
    """Server, scheduler, mom answer; the node is free; the second queue exists."""
    if not Path(f"/run/netns/{NETNS}").exists() or not (PBS_HOME / "server_priv").exists():
        return False
    try:
        queues = _run_inns(bed, ["qstat", "-Q"], check=False, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return queues.ok and SHORT_QUEUE in queues.stdout and _node_free(bed)


def _mom_config() -> None:
    config = PBS_HOME / "mom_priv" / "config"
    text = config.read_text() if config.exists() else ""
    missing = [line for line in MOM_CONFIG_LINES if line not in text.splitlines()]
    if missing:
        config.write_text(text + ("" if text.endswith("\n") or not text else "\n") + "\n".join(missing) + "\n")


def _signal_mom_reload() -> None:
    lock = PBS_HOME / "mom_priv" / "mom.lock"
    try:
        pid = int(lock.read_text().split()[0])
        os.kill(pid, 1)  # SIGHUP: mom reads its config again
    except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
        pass


def start() -> OpenPBS:
    """Build if needed, then bring the complex up (or reuse a healthy one)."""
    began = time.monotonic()
    prefix, built_seconds = build()
    host = host_name()
    sshd.ensure_user(JOB_USER)
    netns_up()
    STATE.mkdir(parents=True, exist_ok=True)
    CONF.write_text(render_pbs_conf(prefix, host))
    bed = OpenPBS(prefix=prefix, host=host, built_seconds=built_seconds)
    netns_plugin.SETTINGS.write_text(json.dumps(bed.settings()))
    shared_mounts_up()
    if healthy(bed):
        if daemons_see_new_mounts():
            return attrs.evolve(bed, bring_up_seconds=time.monotonic() - began, reused=True)
        stop()  # started before MOUNTS was shared (or by older testbed code): restart them inside it
    _run_inns(bed, [str(prefix / "libexec" / "pbs_init.d"), "start"], timeout=300)
    wait_for(lambda: _run_inns(bed, ["qstat", "-B"], check=False).ok, timeout=90, what="pbs_server answering")
    existing = _run_inns(bed, ["qstat", "-Q"], check=False).stdout
    setup = "\n".join(
        line for line in QMGR_SETUP.splitlines() if not (line.startswith("create queue") and SHORT_QUEUE in existing)
    )
    _qmgr(bed, setup)
    if not _run_inns(bed, ["pbsnodes", host], check=False).ok:
        _run_inns(bed, ["qmgr", "-c", f"create node {host}"])
    _mom_config()
    _signal_mom_reload()
    wait_for(lambda: _node_free(bed), timeout=90, what=f"node {host} free in pbsnodes", interval=0.5)
    return attrs.evolve(bed, bring_up_seconds=time.monotonic() - began)


def _qmgr(bed: OpenPBS, script: str) -> None:
    env = {"PATH": f"{bed.prefix}/bin:/usr/bin:/bin", "HOME": "/root", "PBS_CONF_FILE": str(CONF)}
    proc = subprocess.run(inns(["qmgr"]), input=script, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"qmgr exited {proc.returncode}: {proc.stderr.strip()}")


def restart_server(bed: OpenPBS) -> None:
    """Stop pbs_server (and its datastore) while jobs run on the mom, then start it again.

    qstat fails as soon as the server stops listening, while its process still stops the datastore
    and holds ``server_priv/server.lock`` (about 2 s here). Started in that window, ``pbs_init.d``
    finds the old pid alive ("already running") or pbs_server cannot take the lock, and the restart
    is lost: a CI run had the server down for 5 minutes and every PBS test after it refused. So the
    start waits for the old process to be gone; a server that does not come back is started once
    more, and the error says what ``pbs_init.d`` answered.
    """
    _run_inns(bed, ["qterm", "-t", "quick"], check=False)
    try:
        wait_for(lambda: _server_pid() is None, timeout=30, what="the old pbs_server process gone", interval=0.2)
    except TimeoutError:
        stuck = _server_pid()
        if stuck is not None:  # a server that will not finish stopping is restarted the hard way, and says so
            print(f"testbed: pbs_server {stuck} still running 30 s after qterm: killed", file=sys.stderr)
            os.kill(stuck, signal.SIGKILL)
        wait_for(lambda: _server_pid() is None, timeout=10, what="the killed pbs_server gone", interval=0.2)
    for attempt in (1, 2):  # a second start once, saying what the first answered
        started = _run_inns(bed, [str(bed.prefix / "libexec" / "pbs_init.d"), "start"], check=False, timeout=300)
        try:
            wait_for(lambda: _run_inns(bed, ["qstat", "-B"], check=False).ok, timeout=60, what="pbs_server answering")
            break
        except TimeoutError as exc:
            answer = f"{started.stdout.strip()} {started.stderr.strip()}".strip()
            said = f"{exc}; pbs_init.d start exited {started.returncode}: {answer}"
            if attempt == 2:
                raise TimeoutError(said) from None
            print(f"testbed: {said}; starting it again", file=sys.stderr)
    wait_for(lambda: _node_free(bed) or _node_busy(bed), timeout=90, what="the node back in pbsnodes", interval=0.5)


def _server_pid() -> int | None:
    """The pbs_server process ``server.lock`` names while it lives (not a pid another process reuses), else None."""
    pid = pid_from_file(PBS_HOME / "server_priv" / "server.lock")
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip() if pid else ""
    except OSError:
        return None
    return pid if comm.startswith("pbs_server") else None


def _node_busy(bed: OpenPBS) -> bool:
    result = _run_inns(bed, ["pbsnodes", "-a"], check=False, timeout=20)
    return result.ok and "state = job-busy" in result.stdout


def stop() -> None:
    """Stop the daemons (qterm stops the datastore too); the namespace stays for the next start."""
    prefix = prefix_for(tarball())
    if (prefix / "libexec" / "pbs_init.d").exists() and Path(f"/run/netns/{NETNS}").exists():
        bed = OpenPBS(prefix=prefix, host=host_name())
        _run_inns(bed, [str(prefix / "libexec" / "pbs_init.d"), "stop"], check=False, timeout=120)


def job_python() -> str:
    """A Python the job user can run, with this process's cloudpickle (the namespace has no network for pip).

    Built once per cloudpickle version with Debian's python3, outside the namespace.
    """
    import cloudpickle

    venv = STATE / f"job-python-cloudpickle-{cloudpickle.__version__}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        apt_install(["python3-venv"])
        shutil.rmtree(venv, ignore_errors=True)
        _run(["/usr/bin/python3", "-m", "venv", str(venv)])
        _run([str(python), "-m", "pip", "install", "--quiet", f"cloudpickle=={cloudpickle.__version__}"])
        (venv / ".complete").write_text("")
    return str(python)


# ---------------------------------------------------------------------------
# reaching PBS from outside the namespace
# ---------------------------------------------------------------------------


@attrs.define
class NetnsSSH:
    """An sshd inside the namespace and the gateway that reaches it; ``config()`` for clustrix."""

    server: sshd.SSHServer
    gateway: Gateway

    def config(self, **extra: object) -> dict[str, object]:
        return self.server.config(**{"cluster_type": "pbs", **extra})

    def stop(self) -> None:
        self.gateway.stop()
        self.server.cleanup()


def start_ssh(bed: OpenPBS) -> NetnsSSH:
    """An sshd in the namespace (PBS's bin first on the session PATH) and its gateway on 127.0.0.1."""
    apt_install(["openssh-server", "openssh-client"])
    server = sshd.start_sshd(
        bed.user,
        command_prefix=tuple(inns([])),
        extra_config=(f"SetEnv PATH={bed.path} PBS_CONF_FILE={CONF}",),
    )
    # start_sshd picked its own free port inside the namespace's port space: forward that one
    port = server.port
    if not port_is_free(port):
        server.cleanup()
        raise RuntimeError(f"port {port} on 127.0.0.1 is busy outside the namespace: cannot forward it")
    gateway = NAMESPACE.gateway(port)
    gateway.start()
    return NetnsSSH(server=server, gateway=gateway)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    if command == "build":
        print(build())
    elif command == "start":
        print(start())
    elif command == "stop":
        stop()
    else:
        bed = OpenPBS(prefix=prefix_for(tarball()), host=host_name())
        print("healthy" if healthy(bed) else "not running")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
