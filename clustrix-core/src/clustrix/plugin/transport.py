"""How batch-scheduler plugins reach a login node: run an argv, move files, make directories.

SLURM, PBS and SGE compose with any transport, so they work on the login node itself
(:class:`LocalTransport`) and from a laptop over SSH (``clustrix_ssh.SSHTransport``).
Commands are always argv lists; a transport that needs a shell quotes every element.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import attrs

from clustrix.errors import CommandError
from clustrix.remote.runner import write_atomic


@attrs.frozen
class CommandResult:
    """What a command printed and how it ended."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@runtime_checkable
class Transport(Protocol):
    """What core calls on the machine where the scheduler runs: exactly these, nothing else.

    ``run`` runs an argv (a scheduler command, ``rm -rf`` of a job directory); ``run_bytes``
    runs a shell command line and returns its output as raw bytes, which is how every rendered
    script travels (the script on stdin, see :mod:`clustrix.remote.scripts`), binary outcome
    frames included; ``expand`` turns a leading ``~`` into the remote user's home; ``stat``
    (``clustrix doctor``'s work-directory check) returns an object with at least ``st_mode``,
    ``st_uid`` and ``st_size``, and raises ``FileNotFoundError`` for a missing path. Paths are
    strings on that machine. A transport may offer more (:class:`LocalTransport` and ``clustrix_ssh.SSHTransport``
    also write and list files, for tests and tools), but core moves files inside its
    one-command scripts, so the contract holds no other file operation.
    """

    host: str

    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        check: bool = False,
    ) -> CommandResult: ...

    def run_bytes(
        self, command: str, *, input: bytes | None = None, timeout: float | None = None
    ) -> tuple[int, bytes, bytes]: ...

    def expand(self, remote_path: str) -> str: ...

    def stat(self, remote_path: str) -> os.stat_result: ...


class LocalTransport:
    """The transport for the machine this process runs on (the login node, or tests)."""

    host = "localhost"

    def execute(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
    ) -> tuple[int, bytes, bytes]:
        """Run ``argv`` (no shell); exit code, stdout and stderr as bytes.

        The one place a command of this transport runs: :meth:`run` and :meth:`run_bytes` both
        come here, so a subclass that rewrites or records commands overrides only this.
        """
        full_env = None if env is None else {**os.environ, **env}
        proc = subprocess.run(
            list(argv),
            input=input,
            env=full_env,
            cwd=None if cwd is None else self.expand(cwd),
            timeout=timeout,
            capture_output=True,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        return proc.returncode, proc.stdout, proc.stderr

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
        code, out, err = self.execute(argv, input=input, env=env, cwd=cwd, timeout=timeout)
        result = CommandResult(tuple(argv), code, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and not result.ok:
            raise CommandError(result)
        return result

    def run_bytes(
        self, command: str, *, input: bytes | None = None, timeout: float | None = None
    ) -> tuple[int, bytes, bytes]:
        """Run the shell command line ``command`` (``sh -c``); exit code, stdout and stderr as raw bytes."""
        return self.execute(["sh", "-c", command], input=input, timeout=timeout)

    def write_bytes(self, remote_path: str, data: bytes, *, mode: int = 0o600) -> None:
        write_atomic(self.expand(remote_path), data, mode=mode)

    def read_bytes(self, remote_path: str) -> bytes:
        return Path(self.expand(remote_path)).read_bytes()

    def exists(self, remote_path: str) -> bool:
        return Path(self.expand(remote_path)).exists()

    def stat(self, remote_path: str) -> os.stat_result:
        return os.stat(self.expand(remote_path))

    def listdir(self, remote_path: str) -> list[str]:
        return os.listdir(self.expand(remote_path))

    def makedirs(self, remote_path: str, *, mode: int = 0o700) -> None:
        """Create ``remote_path`` and its missing parents with ``mode``; existing directories are left alone."""
        path = Path(self.expand(remote_path))
        missing = []
        while not os.path.lexists(path):
            missing.append(path)
            path = path.parent
        for directory in reversed(missing):
            try:
                os.mkdir(directory, mode)  # never more open than mode (the umask only removes bits)
            except FileExistsError:
                continue
            os.chmod(directory, mode)  # bits the umask removed: the directory is ours, just made

    def lstat(self, remote_path: str) -> os.stat_result:
        return os.lstat(self.expand(remote_path))

    def expand(self, remote_path: str) -> str:
        return os.path.expanduser(remote_path)

    def close(self) -> None:
        pass
