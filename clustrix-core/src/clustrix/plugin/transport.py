"""How batch-scheduler plugins reach a login node: run an argv, move files, make directories.

SLURM, PBS and SGE compose with any transport, so they work on the login node itself
(:class:`LocalTransport`) and from a laptop over SSH (``clustrix_ssh.SSHTransport``).
Commands are always argv lists; a transport that needs a shell quotes every element.
"""

from __future__ import annotations

import os
import shutil
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
    """The operations a scheduler plugin may use on the machine where the scheduler runs.

    Paths are strings on that machine; ``~`` at the start of a path means the remote
    user's home. ``makedirs`` creates missing directories private (0700) by default and
    never changes the mode of one that exists; ``write_bytes`` replaces a file atomically
    (write to a temporary name, then rename). ``stat`` and ``lstat`` (which does not follow
    a symbolic link) return an object with at least ``st_mode``, ``st_uid`` and ``st_size``;
    they, ``read_bytes`` and ``listdir`` raise ``FileNotFoundError`` for a missing path.
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

    def put(self, local_path: str | os.PathLike[str], remote_path: str) -> None: ...

    def write_bytes(self, remote_path: str, data: bytes, *, mode: int = 0o600) -> None: ...

    def read_bytes(self, remote_path: str) -> bytes: ...

    def exists(self, remote_path: str) -> bool: ...

    def stat(self, remote_path: str) -> os.stat_result: ...

    def lstat(self, remote_path: str) -> os.stat_result: ...

    def listdir(self, remote_path: str) -> list[str]: ...

    def makedirs(self, remote_path: str, *, mode: int = 0o700) -> None: ...

    def expand(self, remote_path: str) -> str: ...

    def close(self) -> None: ...


class LocalTransport:
    """The transport for the machine this process runs on (the login node, or tests)."""

    host = "localhost"

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
        result = CommandResult(
            tuple(argv),
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
        if check and not result.ok:
            raise CommandError(result)
        return result

    def put(self, local_path: str | os.PathLike[str], remote_path: str) -> None:
        shutil.copyfile(local_path, self.expand(remote_path))

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
