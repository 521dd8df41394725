"""task-spooler (``tsp``) testbed: Debian's package, one private queue per test session.

``tsp`` starts its server on first use of a socket; ``TS_SOCKET`` names the socket, so a
queue in a fresh private directory is this session's alone. The queue runs one job at a
time (``tsp -S 1``), so a second job waits: cancelling a queued call is testable.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import attrs

from tests.testbed.system import apt_install, wait_for

PACKAGES = ("task-spooler",)


@attrs.define
class TspQueue:
    """A private tsp queue: its socket, and the user whose jobs it runs (None: this process's)."""

    socket: str
    directory: str
    user: str | None = None
    slots: int = 1

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``tsp ARGS`` against this queue, as its user."""
        argv = ["tsp", *args]
        if self.user:
            argv = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", self.user, "--", *argv]
        # TMPDIR: the server keeps each job's (here empty) output file in the queue's own directory
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "TS_SOCKET": self.socket, "TMPDIR": self.directory}
        if self.user:
            env["HOME"] = pwd.getpwnam(self.user).pw_dir
        return subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=30)

    def start(self) -> None:
        self.run("-S", str(self.slots))
        wait_for(lambda: Path(self.socket).exists(), timeout=10, what="the tsp server's socket")

    def restart(self) -> None:
        """Kill the tsp server (its running jobs go on) and start a new one: its queue list is lost."""
        self.run("-K")
        wait_for(lambda: not Path(self.socket).exists(), timeout=10, what="the tsp server to stop")
        self.start()

    def cleanup(self) -> None:
        self.run("-K")
        shutil.rmtree(self.directory, ignore_errors=True)


def start(user: str | None = None, *, slots: int = 1) -> TspQueue:
    """Install task-spooler if needed and start a private queue for ``user``."""
    apt_install(PACKAGES)
    directory = tempfile.mkdtemp(prefix="clustrix-tsp-")
    if user:
        shutil.chown(directory, user, user)
    os.chmod(directory, 0o700)
    queue = TspQueue(socket=os.path.join(directory, "socket"), directory=directory, user=user, slots=slots)
    queue.start()
    return queue
