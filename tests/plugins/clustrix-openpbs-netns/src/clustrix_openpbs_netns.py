"""Test-only plugin: ``cluster_host="openpbs-netns"`` is this machine inside the OpenPBS testbed's namespace.

The OpenPBS testbed (``tests/testbed/openpbs.py``) runs the whole complex in a private
network namespace with its own ``/etc/hosts``, and writes :data:`SETTINGS` when it starts.
This transport runs every command there as the unprivileged job user (PBS's ``bin`` on
``PATH``), treats that user's home as ``~`` and gives the user the files it writes: the
"login node" of the tests, which run as root outside the namespace. Being an installed
entry point, it also serves the ``clustrix`` CLI and other processes the tests start.
"""

from __future__ import annotations

import json
import os
import pwd
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clustrix.plugin.hookspecs import hookimpl
from clustrix.plugin.transport import LocalTransport

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig

HOST = "openpbs-netns"
#: Written by the testbed: namespace, hosts file, job user, PATH and pbs.conf of the running complex.
SETTINGS = Path("/var/lib/clustrix-testbed/openpbs/transport.json")


def inns(argv: Sequence[str], *, netns: str, hosts: str) -> list[str]:
    """``argv`` run inside the namespace, with the private hosts file over ``/etc/hosts``.

    ``nsenter --net`` rather than ``ip netns exec``, which remounts /sys and hides the cgroup mounts.
    The new mount namespace is a *slave* of this one: file systems mounted later under a shared
    mount point (the testbed's ``MOUNTS``) appear inside, the hosts file never leaks out.
    """
    return [
        "nsenter",
        f"--net=/run/netns/{netns}",
        "unshare",
        "-m",
        "--propagation",
        "slave",
        "sh",
        "-c",
        'mount --bind "$0" /etc/hosts && exec "$@"',
        hosts,
        *argv,
    ]


class WrappedLocalTransport(LocalTransport):
    """A local transport whose commands are rewritten first by :meth:`wrap` (the test-only transports' one base).

    The result names the command as asked (``argv``), not as wrapped, so schedulers' error
    messages read as they would on a real login node.
    """

    def wrap(self, argv: Sequence[str], env: Mapping[str, str] | None) -> tuple[list[str], Mapping[str, str] | None]:
        """The command and extra environment to run instead of ``argv`` with ``env``."""
        raise NotImplementedError

    def execute(self, argv: Sequence[str], **options: Any) -> tuple[int, bytes, bytes]:
        # run() and run_bytes() both come here: the result still names the command as asked
        wrapped, env = self.wrap(argv, options.pop("env", None))
        return super().execute(wrapped, env=env, **options)


class NetnsTransport(WrappedLocalTransport):
    """The login node as the job user sees it: commands inside the namespace, files owned by the user."""

    def __init__(self, settings: Mapping[str, str] | None = None) -> None:
        self.settings = dict(settings or json.loads(SETTINGS.read_text()))
        self.host = HOST
        self.account = pwd.getpwnam(self.settings["user"])

    def wrap(self, argv: Sequence[str], env: Mapping[str, str] | None) -> tuple[list[str], None]:
        user = self.settings["user"]
        command = [
            "runuser",
            "-u",
            user,
            "--",
            "env",
            "-i",
            f"PATH={self.settings['path']}",
            f"HOME={self.account.pw_dir}",
            f"USER={user}",
            f"LOGNAME={user}",
            "LANG=C.UTF-8",
            f"PBS_CONF_FILE={self.settings['conf']}",
            *(f"{key}={value}" for key, value in (env or {}).items()),
            *argv,
        ]
        return inns(command, netns=self.settings["netns"], hosts=self.settings["hosts"]), None

    def _give(self, path: str) -> None:
        os.chown(path, self.account.pw_uid, self.account.pw_gid)

    def write_bytes(self, remote_path: str, data: bytes, *, mode: int = 0o600) -> None:
        super().write_bytes(remote_path, data, mode=mode)
        self._give(self.expand(remote_path))

    def makedirs(self, remote_path: str, *, mode: int = 0o700) -> None:
        path = Path(self.expand(remote_path))
        missing = [p for p in (path, *path.parents) if not p.exists()]
        super().makedirs(remote_path, mode=mode)
        for created in missing:
            self._give(str(created))

    def expand(self, remote_path: str) -> str:
        if remote_path == "~" or remote_path.startswith("~/"):
            return self.account.pw_dir + remote_path[1:]
        return remote_path


@hookimpl(tryfirst=True)  # before clustrix-ssh, which would take any cluster_host for an SSH host
def clustrix_make_transport(config: ClusterConfig) -> NetnsTransport | None:
    return NetnsTransport() if config.get("cluster_host") == HOST else None
