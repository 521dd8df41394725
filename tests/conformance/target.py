"""What a scheduler tells the conformance suite about itself (see README.md in this folder)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

from tests.testbed.sshd import SSHServer


@attrs.frozen(kw_only=True)
class Target:
    """One scheduler reached through one transport, and what it can do.

    A capability that is ``None``/``False`` skips its test with the reason; all else must pass.
    """

    #: The ``cluster_type``.
    scheduler: str
    #: ``"local"`` (the login node is this machine), or through the sshd testbed with ``"paramiko"`` or
    #: ``"openssh"`` (the system ``ssh`` over a master connection, see ``clustrix_ssh.openssh``).
    transport: str
    #: ``configure()`` keys that reach the scheduler: ``cluster_type``, ``remote_work_dir``, the
    #: job's Python or ``replicate_distributions``, and over SSH the connection settings.
    options: dict[str, Any]
    #: The shortest time limit worth testing an overrun with (SLURM counts whole minutes).
    short_time: str = "00:01:00"
    #: The scheduler kills a job that uses more memory than it asked for (``JobOutOfMemoryError``).
    enforces_memory: bool = False
    #: ``@cluster`` resources the scheduler accepts but can never run: the job must fail fast
    #: (never-runnable detection, or refused at submit). None skips the test.
    impossible: dict[str, Any] | None = None
    #: Restarts the scheduler's controller (slurmctld, the tsp server) while jobs run. None skips.
    restart_controller: Callable[[], None] | None = None
    #: The user jobs run as on the scheduler's machine (owner of a full file system); None: this process's.
    remote_user: str | None = None
    #: A second job waits while one runs (so cancelling a queued call is testable).
    can_queue: bool = False
    #: A failed call of an upstream map fails only the dependant calls that take it: held task by task
    #: (SLURM ``aftercorr``, SGE ``-hold_jid_ad``) or each call waits for its own inputs (ssh, Kubernetes).
    #: False: the dependant waits for the whole array (PBS, tsp), so one failed call fails every call.
    inputs_one_by_one: bool = False
    #: Or: ``@cluster`` resources that keep a job queued (SLURM: ``--begin`` in an hour).
    hold: dict[str, Any] | None = None
    #: The scheduler's word for a queued job, as :attr:`native_state` prints it.
    queued_word: str = "queued"
    #: Reads the job's state as the scheduler itself reports it, for assertions (native id -> text).
    native_state: Callable[[str], str] | None = None
    #: The job's time limit in seconds as the scheduler itself recorded it (native id -> seconds), to
    #: check that it read the request as meant (a 2-day request is 2 days, not refused). None skips.
    time_limit: Callable[[str], int] | None = None
    #: The login side (what the transport reaches: this machine, or the sshd) sees a file system the
    #: test mounts. False when it lives in a mount namespace of its own (the sshd in the OpenPBS testbed's).
    login_sees_new_mounts: bool = True
    #: Jobs see a file system the test mounts while the scheduler runs. False when the scheduler's
    #: daemons live in a mount namespace of their own (the OpenPBS testbed's); skips the test that needs it.
    jobs_see_new_mounts: bool = True
    #: Where the test mounts its small file systems: a shared mount point whose new mounts the
    #: scheduler's own mount namespaces receive (the OpenPBS testbed's). None: a new temporary directory.
    mount_dir: str | None = None
    #: Where the scheduler keeps copies of job scripts and job data (its spool and state directories, the
    #: execution side's too): no secret value may be in any of them. Empty: the test cannot look.
    spool_dirs: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.scheduler}-{self.transport}"


@contextlib.contextmanager
def full_file_system(owner: str | None, size: str = "1m", parent: str | None = None) -> Iterator[Path]:
    """A small tmpfs owned by ``owner`` (mode 0700) in ``parent``, for "the job directory's file system is full"."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        raise RuntimeError("mounting a small tmpfs needs root and mount(8)")
    directory = Path(tempfile.mkdtemp(prefix="clustrix-full-", dir=parent))
    entry = pwd.getpwnam(owner) if owner else None
    ids = f",uid={entry.pw_uid},gid={entry.pw_gid}" if entry else ""
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700{ids}", "tmpfs", str(directory)],
        check=True,
        capture_output=True,
    )
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False, capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)


def ssh_options(server: SSHServer, **extra: Any) -> dict[str, Any]:
    """Connection keys for the sshd testbed; the job's Python is a venv the login node builds once."""
    options = server.config(replicate_distributions=["clustrix-core"], **extra)
    del options["cluster_type"]
    return options


def local_options(work_dir: str, **extra: Any) -> dict[str, Any]:
    """Keys for the scheduler on this machine: this interpreter runs the jobs."""
    return {"remote_work_dir": work_dir, "python_executable": sys.executable, **extra}


#: The transports of a scheduler on a login node reached over SSH: the two SSH clients.
SSH_TRANSPORTS = ("paramiko", "openssh")


def ssh_client_options(transport: str) -> dict[str, Any]:
    """``ssh_client`` for the transport; the system ``ssh`` reads no ssh_config but the one given (``-F``)."""
    if transport == "openssh":
        return {"ssh_client": "openssh", "ssh_config_file": "/dev/null"}
    return {"ssh_client": "paramiko"}


def transport_options(transport: str, scheduler: str, work_dir: str, server: SSHServer) -> dict[str, Any]:
    """:func:`local_options` in ``work_dir``, or :func:`ssh_options` in ``~/.clustrix/conformance-<scheduler>``."""
    if transport == "local":
        return local_options(work_dir)
    return ssh_options(server, remote_work_dir=f"~/.clustrix/conformance-{scheduler}", **ssh_client_options(transport))
