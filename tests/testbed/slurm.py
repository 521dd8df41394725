"""A real single-node SLURM cluster for the tests: munge, MariaDB, slurmdbd, slurmctld, slurmd.

:func:`start` installs the Debian packages (one apt call), writes ``/etc/slurm``,
starts every daemon by hand (there is no systemd here and ``policy-rc.d`` refuses
service starts) and waits until ``sinfo`` shows the node idle. It is idempotent: a
cluster that is already up and healthy is reused, so several test sessions (and the
PBS tests, which drive SLURM through its Torque wrappers) can share one.
:func:`stop` ends the daemons by their pid files and deletes the namespace.

slurmctld, slurmd and slurmdbd bind ``0.0.0.0``, so they run inside the testbed's network
namespace ``clustrix-slurm`` (:mod:`tests.testbed.netns`); gateways on ``127.0.0.1:6817``
and ``127.0.0.1:6819`` forward clients outside (``sbatch``, ``squeue``, ``sacct``, the
Torque-style wrappers, sessions of the sshd testbed) to them, and the daemons see those
clients on their own loopback. ``/etc/slurm`` says ``127.0.0.1`` as before, so a cluster
brought up by an older version of this file and one brought up by this one look the same
to clients. munged and MariaDB (unix sockets only) run outside.

The configuration is tuned for tests (see ``/work/shared/testbed-notes.md``):
one-second scheduling, ``OverSubscribe=FORCE:8`` so arrays run 16 at a time on two
CPUs, cgroups (``task/cgroup``, ``ConstrainRAMSpace``) so a memory overrun ends
``OUT_OF_MEMORY``, and accounting through slurmdbd + MariaDB (unix socket only) so
``sacct`` works. A second partition ``short`` (``MaxTime=5`` minutes) lets tests ask
for something the cluster will never run.

Run ``python -m tests.testbed.slurm start|stop|status`` by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import attrs

from tests.testbed.netns import Namespace
from tests.testbed.sshd import ensure_user
from tests.testbed.system import apt_install, host_name, pid_from_file, succeeds, terminate, testbed_main, wait_for

PACKAGES = ("slurm-wlm", "munge", "slurmdbd", "mariadb-server")
CLUSTER_NAME = "clustrix"
ETC = Path("/etc/slurm")
RUN = Path("/run/slurm")
LOG = Path("/var/log/slurm")
SPOOL_CTLD = Path("/var/spool/slurmctld")
SPOOL_D = Path("/var/spool/slurmd")
MYSQL_RUN = Path("/run/mysqld")
MYSQL_SOCKET = MYSQL_RUN / "mysqld.sock"
DB_NAME = "slurm_acct_db"
DB_USER = "slurm"
DB_PASSWORD = "clustrix-testbed"  # local unix-socket database of a throwaway testbed
#: The unprivileged user that other testbeds (sshd) log in as; it must be able to submit.
TEST_USER = "clustrix-test"

PID_FILES = {
    "slurmd": RUN / "slurmd.pid",
    "slurmctld": RUN / "slurmctld.pid",
    "slurmdbd": RUN / "slurmdbd.pid",
    "mariadbd": MYSQL_RUN / "mysqld.pid",
    "munged": Path("/run/munge/munged.pid"),
}


#: slurmctld, slurmd and slurmdbd run here (they bind 0.0.0.0); munged and MariaDB stay outside (unix sockets only)
NAMESPACE = Namespace("clustrix-slurm", address="10.254.253.1/24")
#: slurmctld and slurmdbd, reached by clients outside through a gateway on 127.0.0.1 each
#: (slurmd is reached by slurmctld only, inside)
GATEWAYS = (NAMESPACE.gateway(6817), NAMESPACE.gateway(6819))
IN_NAMESPACE = ("slurmctld", "slurmd", "slurmdbd")

#: the partitions whose jobs the urgent partition's preempt; a preempted job keeps running
#: GraceTime seconds after its --signal before SLURM kills and requeues it
PREEMPTIBLE = "PriorityTier=1 GraceTime=5"


@attrs.frozen
class SlurmTestbed:
    """A running cluster: its node and partitions, whether cgroups and accounting are on."""

    node: str
    cpus: int
    real_memory_mb: int
    partition: str = "debug"
    short_partition: str = "short"
    short_max_minutes: int = 5
    #: jobs here preempt (requeue) jobs of the other partitions when they need their resources
    urgent_partition: str = "urgent"
    cgroups: bool = True
    accounting: bool = True
    bring_up_seconds: float = 0.0
    reused: bool = False


def node_name() -> str:
    return host_name()


def real_memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 2048
    raise RuntimeError("no MemTotal in /proc/meminfo")


def cgroup_v1_memory_available() -> bool:
    return Path("/sys/fs/cgroup/memory").is_dir() and Path("/sys/fs/cgroup/freezer").is_dir()


def render_slurm_conf(*, node: str, cpus: int, memory_mb: int, cgroups: bool, accounting: bool) -> str:
    """The slurm.conf of the testbed (a pure function, so the config can be read in one place)."""
    lines = [
        f"ClusterName={CLUSTER_NAME}",
        f"SlurmctldHost={node}(127.0.0.1)",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        "MpiDefault=none",
        f"StateSaveLocation={SPOOL_CTLD}",
        f"SlurmdSpoolDir={SPOOL_D}",
        f"SlurmctldPidFile={PID_FILES['slurmctld']}",
        f"SlurmdPidFile={PID_FILES['slurmd']}",
        f"SlurmctldLogFile={LOG / 'slurmctld.log'}",
        f"SlurmdLogFile={LOG / 'slurmd.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "ReturnToService=2",
        "MinJobAge=300",
        # a requeued job waits cred_expire before it may start again (default 120 s)
        "AuthInfo=cred_expire=5",
        "MaxArraySize=10001",
        "MaxJobCount=100000",
        "KillWait=5",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=sched_interval=1,bf_interval=1,sched_min_interval=0,batch_sched_delay=0,default_queue_depth=1000",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU_Memory",
        "DefMemPerCPU=256",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={LOG / 'jobcomp.log'}",
        # preemption as a site runs it: the urgent partition's jobs requeue the others', which
        # get their --signal (SIGUSR2 for checkpoint()) at once and GraceTime seconds to act on it
        "PreemptType=preempt/partition_prio",
        "PreemptMode=REQUEUE",
        "SlurmctldParameters=preempt_send_user_signal",
    ]
    if cgroups:
        lines += ["ProctrackType=proctrack/cgroup", "TaskPlugin=task/cgroup,task/affinity"]
    else:
        lines += ["ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none"]
    if accounting:
        lines += [
            "AccountingStorageType=accounting_storage/slurmdbd",
            "AccountingStorageHost=localhost",
            "AccountingStoragePort=6819",
            "JobAcctGatherType=jobacct_gather/linux",
            "JobAcctGatherFrequency=5",
        ]
    else:
        lines += ["AccountingStorageType=accounting_storage/none"]
    lines += [
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} Sockets=1 CoresPerSocket={cpus} ThreadsPerCore=1 "
        f"RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8 {PREEMPTIBLE}",
        f"PartitionName=short Nodes=ALL Default=NO MaxTime=5 State=UP OverSubscribe=FORCE:8 {PREEMPTIBLE}",
        "PartitionName=urgent Nodes=ALL Default=NO MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF",
    ]
    return "\n".join(lines) + "\n"


def render_cgroup_conf() -> str:
    return "\n".join(
        [
            "CgroupPlugin=cgroup/v1",
            "CgroupAutomount=yes",
            "ConstrainCores=yes",
            "ConstrainRAMSpace=yes",
            "ConstrainSwapSpace=yes",
            "",
        ]
    )


def render_slurmdbd_conf() -> str:
    return "\n".join(
        [
            "AuthType=auth/munge",
            "DbdHost=localhost",
            "DbdPort=6819",
            "SlurmUser=root",
            f"PidFile={PID_FILES['slurmdbd']}",
            f"LogFile={LOG / 'slurmdbd.log'}",
            "DebugLevel=info",
            "StorageType=accounting_storage/mysql",
            "StorageHost=localhost",
            f"StorageLoc={DB_NAME}",
            f"StorageUser={DB_USER}",
            f"StoragePass={DB_PASSWORD}",
            "",
        ]
    )


# ---------------------------------------------------------------------------
# process helpers
# ---------------------------------------------------------------------------


def _pid_alive(pid_file: Path) -> bool:
    return pid_from_file(pid_file) is not None


def _run(
    argv: Sequence[str], *, check: bool = True, timeout: float = 60, **kw: object
) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
        list(argv), capture_output=True, text=True, check=check, timeout=timeout, **kw
    )
    return result


def _ok(argv: Sequence[str]) -> bool:
    return succeeds(argv)


def node_state(node: str) -> str:
    try:
        proc = _run(["sinfo", "--noheader", "--node", node, "--format=%T"], check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else ""


def in_namespace() -> bool:
    """slurmctld, slurmd and slurmdbd run inside the namespace and the gateways to them are up."""
    daemons = all(NAMESPACE.holds(pid_from_file(PID_FILES[name])) for name in IN_NAMESPACE)
    return daemons and all(gateway.running() for gateway in GATEWAYS)


def healthy(node: str) -> bool:
    """Every daemon is alive (inside the namespace where it should be), the node is usable and accounting answers."""
    if not all(_pid_alive(p) for p in PID_FILES.values()) or not in_namespace():
        return False
    state = node_state(node).rstrip("*~#")
    if state not in {"idle", "mixed", "allocated", "completing"}:
        return False
    return _ok(["sacct", "--noheader", "-X", "-n", "--starttime=now-1minutes"])


def _write(path: Path, text: str, *, mode: int = 0o644, owner: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    if owner:
        shutil.chown(path, owner, owner)


# ---------------------------------------------------------------------------
# bring-up
# ---------------------------------------------------------------------------


def _start_munge() -> None:
    if _pid_alive(PID_FILES["munged"]):
        return
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        _run(["mungekey", "--create", "--keyfile", str(key)])
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
    run_dir = Path("/run/munge")
    run_dir.mkdir(mode=0o755, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    _run(["runuser", "-u", "munge", "--", "munged", "--force"])
    wait_for(lambda: _ok(["sh", "-c", "munge -n | unmunge"]), timeout=20, what="munged answering")


def _mysql(sql: str) -> None:
    _run(["mariadb", f"--socket={MYSQL_SOCKET}", "-u", "root", "-e", sql])


def _start_mariadb() -> None:
    if not _pid_alive(PID_FILES["mariadbd"]):
        MYSQL_RUN.mkdir(mode=0o755, exist_ok=True)
        shutil.chown(MYSQL_RUN, "mysql", "mysql")
        log = open(LOG / "mariadbd.log", "ab")  # noqa: SIM115 - handed to the daemon
        subprocess.Popen(
            [
                "mariadbd",
                "--user=mysql",
                "--skip-networking",
                f"--socket={MYSQL_SOCKET}",
                f"--pid-file={PID_FILES['mariadbd']}",
                "--innodb-buffer-pool-size=256M",
                "--innodb-lock-wait-timeout=900",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(
            lambda: _ok(["mariadb-admin", f"--socket={MYSQL_SOCKET}", "ping"]), timeout=60, what="mariadbd answering"
        )
    _mysql(
        f"CREATE DATABASE IF NOT EXISTS {DB_NAME}; "
        f"CREATE USER IF NOT EXISTS '{DB_USER}'@'localhost' IDENTIFIED BY '{DB_PASSWORD}'; "
        f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'localhost'; FLUSH PRIVILEGES;"
    )


def _daemon(name: str, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Start a SLURM daemon inside the namespace (it forks into the background itself)."""
    return _run(NAMESPACE.enter([name, *args]), check=check)


def _start_slurmdbd() -> None:
    if not _pid_alive(PID_FILES["slurmdbd"]):
        _daemon("slurmdbd", check=True)
    wait_for(lambda: _ok(["sacctmgr", "-n", "list", "cluster"]), timeout=60, what="slurmdbd answering")
    listed = _run(["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"], check=False).stdout.split()
    if CLUSTER_NAME not in listed:
        _run(["sacctmgr", "-i", "add", "cluster", CLUSTER_NAME])


def _configure(node: str, cpus: int, memory_mb: int, cgroups: bool, accounting: bool) -> None:
    for directory in (RUN, LOG, SPOOL_CTLD, SPOOL_D):
        directory.mkdir(parents=True, exist_ok=True)
    _write(
        ETC / "slurm.conf",
        render_slurm_conf(node=node, cpus=cpus, memory_mb=memory_mb, cgroups=cgroups, accounting=accounting),
    )
    _write(ETC / "cgroup.conf", render_cgroup_conf())
    _write(ETC / "slurmdbd.conf", render_slurmdbd_conf(), mode=0o600)


def start(*, cgroups: bool | None = None, accounting: bool = True) -> SlurmTestbed:
    """Bring the cluster up (or reuse a healthy one) and return what it offers."""
    began = time.monotonic()
    node = node_name()
    cpus = os.cpu_count() or 1
    memory_mb = real_memory_mb()
    if cgroups is None:
        cgroups = cgroup_v1_memory_available()
    if healthy(node):
        text = (ETC / "slurm.conf").read_text()
        running_cgroups, running_accounting = "task/cgroup" in text, "accounting_storage/slurmdbd" in text
        wanted = render_slurm_conf(
            node=node, cpus=cpus, memory_mb=memory_mb, cgroups=running_cgroups, accounting=running_accounting
        )
        if text == wanted:
            return SlurmTestbed(
                node=node,
                cpus=cpus,
                real_memory_mb=memory_mb,
                cgroups=running_cgroups,
                accounting=running_accounting,
                bring_up_seconds=time.monotonic() - began,
                reused=True,
            )
        # a cluster started with an older version of this file: restart it with the current config
        stop()
        cgroups, accounting = running_cgroups, running_accounting
    _stop_outside()
    apt_install(PACKAGES)
    _configure(node, cpus, memory_mb, cgroups, accounting)
    ensure_user(TEST_USER)
    NAMESPACE.up()
    for gateway in GATEWAYS:
        gateway.start()
    _start_munge()
    if accounting:
        _start_mariadb()
        _start_slurmdbd()
    if not _pid_alive(PID_FILES["slurmctld"]):
        _daemon("slurmctld", check=True)
    wait_for(lambda: _ok(["scontrol", "ping"]), timeout=60, what="slurmctld answering")
    if not _pid_alive(PID_FILES["slurmd"]):
        proc = _daemon("slurmd", "-N", node)
        if proc.returncode != 0 and cgroups:
            # cgroups could not be set up: fall back to the configuration without them
            stop()
            return start(cgroups=False, accounting=accounting)
    try:
        wait_for(
            lambda: node_state(node).rstrip("*~#") == "idle",
            timeout=60,
            what=f"node {node} idle in sinfo",
            interval=0.1,
        )
    except TimeoutError:
        _run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], check=False)
        wait_for(
            lambda: node_state(node).rstrip("*~#") == "idle",
            timeout=30,
            what=f"node {node} idle in sinfo",
            interval=0.1,
        )
    return SlurmTestbed(
        node=node,
        cpus=cpus,
        real_memory_mb=memory_mb,
        cgroups=cgroups,
        accounting=accounting,
        bring_up_seconds=time.monotonic() - began,
    )


def stop() -> None:
    """End the daemons by their pid files (in reverse start order); delete the namespace and its gateways."""
    for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
        terminate(pid_from_file(PID_FILES[name]), timeout=20)
    NAMESPACE.down()


def _stop_outside() -> None:
    """End slurmctld, slurmd and slurmdbd where they run outside the namespace (started by an older
    version of this file, they listen on 0.0.0.0); munged, MariaDB and jobs' slurmstepd keep running,
    and the daemons started again inside take the jobs over from their state files."""
    for name in IN_NAMESPACE:
        pid = pid_from_file(PID_FILES[name])
        if pid is not None and not NAMESPACE.holds(pid):
            terminate(pid, timeout=20)


def restart_controller() -> None:
    """Stop slurmctld and start it again while jobs run; it recovers them from its state files."""
    pid_file = PID_FILES["slurmctld"]
    if _pid_alive(pid_file):
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 15)
        wait_for(lambda: not _pid_alive(pid_file), timeout=30, what="slurmctld to stop")
    _daemon("slurmctld", check=True)
    wait_for(lambda: _ok(["scontrol", "ping"]), timeout=60, what="slurmctld answering again")


def main(argv: list[str]) -> int:
    return testbed_main(argv, start=start, stop=stop, healthy=lambda: healthy(node_name()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
