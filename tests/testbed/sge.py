"""A real single-node Son of Grid Engine 8.1.9 for the tests: sge_qmaster and sge_execd.

:func:`start` installs Debian's gridengine packages with a debconf preseed (one apt
call), makes the clients reach the qmaster (the ``host_aliases`` fix), starts both
daemons by hand (no systemd here, ``policy-rc.d`` refuses service starts), applies
the configuration below with ``qconf`` and waits until the queue instances are
usable. A cell that is already up, healthy and configured by this version of the
file is reused. :func:`stop` ends the daemons by their pid files and deletes the namespace.

Both daemons bind ``0.0.0.0``, so they run inside the testbed's network namespace
``clustrix-sge`` (:mod:`tests.testbed.netns`); a gateway on ``127.0.0.1:6444`` forwards
clients outside (``qsub``, ``qstat``, sessions of the sshd testbed) to the qmaster inside,
which sees them on its own loopback as before, so ``act_qmaster`` and ``host_aliases``
stay as they were and nothing of SGE listens on the machine's other addresses.

The configuration is tuned for tests (see ``/work/shared/testbed-notes.md``):

- global: ``min_uid``/``min_gid`` 0 (root may submit), ``unix_behavior`` (scripts'
  ``#!`` is honoured), a 5-s load report, accounting flushed at once so ``qacct``
  sees a job the moment it leaves ``qstat``;
- scheduler: a one-second interval, immediate flushes on submit and finish, queues
  sorted by ``seq_no`` so jobs without ``-q`` land in ``all.q``;
- two queues: ``all.q`` (16 slots on the two cores, so arrays and parallel tests
  run side by side) and ``short.q`` (4 slots, ``h_rt`` at most 5 minutes, so a
  request for more is refused by ``qsub -w e``); both allow the ``smp`` parallel
  environment (``$pe_slots``: all slots on one host) and ignore load;
- a project ``clustrix`` so ``-P`` can be tested.

Run ``python -m tests.testbed.sge start|stop|status`` by hand.
"""

from __future__ import annotations

import glob
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from clustrix_sge.parse import parse_qconf
from tests.testbed.netns import Namespace
from tests.testbed.sshd import ensure_user
from tests.testbed.system import apt_install, host_name, pid_from_file, succeeds, terminate, testbed_main, wait_for

PACKAGES = ("gridengine-common", "gridengine-client", "gridengine-master", "gridengine-exec")
SGE_ROOT = Path("/var/lib/gridengine")
SGE_CELL = "default"
COMMON = SGE_ROOT / SGE_CELL / "common"
QMASTER_SPOOL = Path("/var/spool/gridengine/qmaster")
EXECD_SPOOL = Path("/var/spool/gridengine/execd")
QMASTER_PID = QMASTER_SPOOL / "qmaster.pid"
#: Written after a successful configuration: the hash of what was applied (reuse only when it matches).
STAMP = COMMON / "clustrix-testbed.sha256"
ENV = {"SGE_ROOT": str(SGE_ROOT), "SGE_CELL": SGE_CELL}
#: The unprivileged user that the sshd testbed logs in as; it must be able to submit.
TEST_USER = "clustrix-test"
QUEUE = "all.q"
SHORT_QUEUE = "short.q"
SHORT_MAX_RT = "00:05:00"
PE = "smp"
PROJECT = "clustrix"
QUEUE_SLOTS = 16
SHORT_SLOTS = 4
#: The daemons run here; clients outside reach the qmaster through a gateway on 127.0.0.1:6444.
NAMESPACE = Namespace("clustrix-sge", address="10.254.252.1/24")
QMASTER_PORT = 6444
GATEWAY = NAMESPACE.gateway(QMASTER_PORT)


@attrs.frozen
class SGETestbed:
    """A running cell: its execution host, queues, parallel environment and project."""

    host: str
    queue: str = QUEUE
    short_queue: str = SHORT_QUEUE
    short_max_rt: str = SHORT_MAX_RT
    pe: str = PE
    project: str = PROJECT
    slots: int = QUEUE_SLOTS
    bring_up_seconds: float = 0.0
    reused: bool = False


def preseed(host: str) -> str:
    """debconf answers for the four packages: configure the cell ``default`` with ``host`` as master."""
    lines = []
    for package in PACKAGES:
        lines += [
            f"{package} shared/gridengineconfig boolean true",
            f"{package} shared/gridenginecell string {SGE_CELL}",
            f"{package} shared/gridenginemaster string {host}",
        ]
    return "\n".join(lines) + "\n"


def host_aliases(host: str) -> str | None:
    """The ``host_aliases`` line that makes loopback clients count as ``host``, or None if not needed.

    127.0.0.1 reverse-resolves to ``localhost`` here, and the qmaster refuses a client
    whose address resolves to another name than the one it claims ("access denied").
    """
    try:
        resolved = socket.gethostbyaddr("127.0.0.1")[0].split(".")[0]
    except OSError:
        return None
    return None if resolved == host else f"{host} {resolved}\n"


# ---------------------------------------------------------------------------
# the configuration, as pure data (attribute -> value, as qconf prints it)
# ---------------------------------------------------------------------------


def global_changes() -> dict[str, str]:
    return {
        "min_uid": "0",
        "min_gid": "0",
        "shell_start_mode": "unix_behavior",
        "load_report_time": "00:00:05",
        "max_unheard": "00:01:00",
        "reporting_params": (
            "accounting=true reporting=false flush_time=00:00:01 joblog=false "
            "sharelog=00:00:00 accounting_flush_time=00:00:00"
        ),
    }


def scheduler_changes() -> dict[str, str]:
    return {
        "schedule_interval": "0:0:1",
        "flush_submit_sec": "1",
        "flush_finish_sec": "1",
        "queue_sort_method": "seqno",
        "job_load_adjustments": "NONE",
        "load_adjustment_decay_time": "0:0:0",
        "max_pending_tasks_per_job": "200",
    }


def pe_attributes() -> dict[str, str]:
    return {
        "pe_name": PE,
        "slots": "9999",
        "user_lists": "NONE",
        "xuser_lists": "NONE",
        "start_proc_args": "NONE",
        "stop_proc_args": "NONE",
        "allocation_rule": "$pe_slots",
        "control_slaves": "FALSE",
        "job_is_first_task": "TRUE",
        "urgency_slots": "min",
        "accounting_summary": "FALSE",
        "qsort_args": "NONE",
    }


def queue_changes(name: str, host: str) -> dict[str, str]:
    short = name == SHORT_QUEUE
    return {
        "qname": name,
        "hostlist": host,
        "seq_no": "10" if short else "0",
        "load_thresholds": "NONE",
        "pe_list": PE,
        "slots": str(SHORT_SLOTS if short else QUEUE_SLOTS),
        "shell": "/bin/bash",
        "shell_start_mode": "unix_behavior",
        "h_rt": SHORT_MAX_RT if short else "INFINITY",
        # seconds between the -notify signal (SIGUSR2 before a kill) and the kill
        "notify": "00:00:05",
        "rerun": "FALSE",
    }


def exec_host_attributes(host: str) -> dict[str, str]:
    return {
        "hostname": host,
        "load_scaling": "NONE",
        "complex_values": "NONE",
        "user_lists": "NONE",
        "xuser_lists": "NONE",
        "projects": "NONE",
        "xprojects": "NONE",
        "usage_scaling": "NONE",
        "report_variables": "NONE",
    }


def project_attributes() -> dict[str, str]:
    return {"name": PROJECT, "oticket": "0", "fshare": "0", "acl": "NONE", "xacl": "NONE"}


def desired_state(host: str) -> str:
    """Everything this file configures, as one text (its hash decides whether a running cell is reused)."""
    parts = [
        repr(sorted(global_changes().items())),
        repr(sorted(scheduler_changes().items())),
        repr(sorted(pe_attributes().items())),
        repr(sorted(queue_changes(QUEUE, host).items())),
        repr(sorted(queue_changes(SHORT_QUEUE, host).items())),
        repr(sorted(exec_host_attributes(host).items())),
        repr(sorted(project_attributes().items())),
        host_aliases(host) or "",
    ]
    return "\n".join(parts)


def render_attributes(values: Mapping[str, str]) -> str:
    width = max(len(k) for k in values) + 1
    return "".join(f"{key.ljust(width)}{value}\n" for key, value in values.items())


# ---------------------------------------------------------------------------
# process helpers
# ---------------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, **ENV}


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=timeout, env=_env())
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _ok(argv: Sequence[str]) -> bool:
    return succeeds(argv, env=_env())


def execd_pid_files() -> list[Path]:
    """The execd spools under the name the qmaster knows it by (``localhost`` here), so glob."""
    return [Path(p) for p in glob.glob(str(EXECD_SPOOL / "*" / "execd.pid"))]


def execd_pid() -> int | None:
    for pid_file in execd_pid_files():
        pid = pid_from_file(pid_file)
        if pid is not None:
            return pid
    return None


def queue_instances_usable(host: str) -> bool:
    """Both queue instances on ``host`` exist and are in no alarm/unknown/error/disabled state."""
    try:
        proc = _run(["qstat", "-f", "-q", f"{QUEUE},{SHORT_QUEUE}"], check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if proc.returncode != 0:
        return False
    seen = set()
    for line in proc.stdout.splitlines():
        fields = line.split()
        if fields and "@" in fields[0]:
            name = fields[0].split("@", 1)[0]
            state = fields[5] if len(fields) > 5 else ""
            if any(flag in state for flag in "auEdsSDC"):
                return False
            seen.add(name)
    return {QUEUE, SHORT_QUEUE} <= seen


def healthy(host: str) -> bool:
    """Both daemons alive inside the namespace, the gateway up, configured by this file, queues usable."""
    if not (NAMESPACE.holds(pid_from_file(QMASTER_PID)) and NAMESPACE.holds(execd_pid()) and GATEWAY.running()):
        return False
    try:
        stamp = STAMP.read_text().strip()
    except OSError:
        return False
    if stamp != hashlib.sha256(desired_state(host).encode()).hexdigest():
        return False
    return queue_instances_usable(host)


# ---------------------------------------------------------------------------
# bring-up
# ---------------------------------------------------------------------------


def _qconf_load(flag: str, values: Mapping[str, str], *, name: str | None = None) -> None:
    """``qconf -A.../-M... FILE``; ``-Mconf`` takes the configuration's name from the file's name."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / (name or "object")
        path.write_text(render_attributes(values))
        _run(["qconf", flag, str(path)])


def _merge(show: Sequence[str], changes: Mapping[str, str]) -> dict[str, str] | None:
    """The object as qconf shows it with ``changes`` applied; None if it does not exist (yet)."""
    proc = _run(show, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    current = parse_qconf(proc.stdout)
    if not current or any(word in proc.stdout.lower() for word in ("is not a", "no such", "does not exist")):
        return None
    return {**current, **changes}


def _add_or_modify(show: Sequence[str], add: str, modify: str, values: Mapping[str, str]) -> None:
    """Load the whole object (``values`` holds every attribute qconf requires): add it, or replace it."""
    exists = _merge(show, {}) is not None
    _qconf_load(modify if exists else add, values)


def _queue_template() -> dict[str, str]:
    return parse_qconf(_run(["qconf", "-sq"]).stdout)


def _configure(host: str) -> None:
    merged = _merge(["qconf", "-sconf", "global"], global_changes())
    if merged is None:
        raise RuntimeError("qconf -sconf global printed nothing")
    _qconf_load("-Mconf", merged, name="global")
    merged = _merge(["qconf", "-ssconf"], scheduler_changes())
    if merged is None:
        raise RuntimeError("qconf -ssconf printed nothing")
    _qconf_load("-Msconf", merged)
    if host not in _run(["qconf", "-ss"], check=False).stdout.split():
        _run(["qconf", "-as", host])
    _add_or_modify(["qconf", "-se", host], "-Ae", "-Me", exec_host_attributes(host))
    _add_or_modify(["qconf", "-sp", PE], "-Ap", "-Mp", pe_attributes())
    _add_or_modify(["qconf", "-sprj", PROJECT], "-Aprj", "-Mprj", project_attributes())
    template = _queue_template()
    for name in (QUEUE, SHORT_QUEUE):
        values = {**template, **queue_changes(name, host)}
        _add_or_modify(["qconf", "-sq", name], "-Aq", "-Mq", values)


def _start_qmaster() -> None:
    NAMESPACE.up()
    if pid_from_file(QMASTER_PID) is None:
        Path("/run/gridengine").mkdir(exist_ok=True)
        _run(NAMESPACE.enter(["/usr/sbin/sge_qmaster"]))
    GATEWAY.start()
    wait_for(lambda: _ok(["qconf", "-sh"]), timeout=60, what="sge_qmaster answering", interval=0.1)


def _start_execd() -> None:
    if execd_pid() is None:
        _run(NAMESPACE.enter(["/usr/sbin/sge_execd"]))
    wait_for(lambda: execd_pid() is not None, timeout=30, what="sge_execd pid file", interval=0.1)


def start() -> SGETestbed:
    """Bring the cell up (or reuse a healthy one configured by this file) and return what it offers."""
    began = time.monotonic()
    host = host_name()
    if healthy(host):
        return SGETestbed(host=host, bring_up_seconds=time.monotonic() - began, reused=True)
    running = [pid for pid in (pid_from_file(QMASTER_PID), execd_pid()) if pid is not None]
    if any(not NAMESPACE.holds(pid) for pid in running):
        stop()  # daemons started outside the namespace (an older version of this file) listen on 0.0.0.0
    apt_install(PACKAGES, preseed=preseed(host))
    aliases = host_aliases(host)
    alias_file = COMMON / "host_aliases"
    if aliases and (not alias_file.exists() or alias_file.read_text() != aliases):
        alias_file.write_text(aliases)
        stop()  # the qmaster reads host_aliases at start only
    ensure_user(TEST_USER)
    _start_qmaster()
    _configure(host)
    _start_execd()
    wait_for(lambda: queue_instances_usable(host), timeout=60, what=f"queues on {host} usable", interval=0.2)
    STAMP.write_text(hashlib.sha256(desired_state(host).encode()).hexdigest() + "\n")
    return SGETestbed(host=host, bring_up_seconds=time.monotonic() - began)


def restart_qmaster() -> None:
    """Stop sge_qmaster and start it again (running jobs stay with the execd); return when it answers."""
    terminate(pid_from_file(QMASTER_PID))
    _start_qmaster()
    wait_for(lambda: queue_instances_usable(host_name()), timeout=60, what="queues usable again", interval=0.2)


def stop() -> None:
    """End sge_execd, then sge_qmaster, by their pid files (the execd kills running jobs); delete the namespace."""
    terminate(execd_pid())
    terminate(pid_from_file(QMASTER_PID))
    STAMP.unlink(missing_ok=True)
    NAMESPACE.down()


def main(argv: list[str]) -> int:
    return testbed_main(argv, start=start, stop=stop, healthy=lambda: healthy(host_name()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
