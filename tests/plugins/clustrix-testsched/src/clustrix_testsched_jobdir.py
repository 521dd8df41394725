"""The test-only half of :mod:`clustrix.remote.jobdir`: stage a job directory and read it back, one call each.

Production backends stage and read through the batch engine's one-command scripts
(:mod:`clustrix.batch.shell`); these plain functions serve the test scheduler of this
distribution (``subprocess``) and tests that drive the runner directly.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import stat
from collections.abc import Sequence

import attrs

from clustrix.errors import CommandError
from clustrix.plugin.transport import LocalTransport, Transport
from clustrix.plugin.types import JobSpec, Outcome
from clustrix.remote import runner
from clustrix.remote import scripts as remote_script
from clustrix.remote.jobdir import decode_outcome


def encode_payload(spec: JobSpec, tasks: Sequence[Sequence[int]], *, claim: bool = False) -> bytes:
    """The bytes of ``payload.pkl``; ``claim`` turns on dynamic packing (see :mod:`clustrix.remote.runner`)."""
    tasks = [list(t) for t in tasks]
    return runner.dumps({"func": spec.func, "arguments": list(spec.arguments), "tasks": tasks, "claim": claim})


def job_dir_for(base_dir: str, spec: JobSpec) -> str:
    return posixpath.join(base_dir, spec.job_id)


def render_stage(base_dir: str, job_dir: str) -> str:
    """The script of :func:`stage`: check the work dir, create the job dir and ``out/`` 0700, store the payload.

    The payload is the rest of stdin after the script (see :mod:`clustrix.remote.scripts`).
    """
    q = shlex.quote
    payload = posixpath.join(job_dir, runner.PAYLOAD)
    return "\n".join(
        [
            remote_script.CHECK_FUNCTIONS,
            *remote_script.render_work_dir_check(base_dir),
            "set -e",
            f"mkdir -m 700 -- {q(job_dir)} {q(posixpath.join(job_dir, runner.OUT_DIR))}",
            f"cat > {q(payload + '.tmp')}",
            f"mv -- {q(payload + '.tmp')} {q(payload)}",
            "",
        ]
    )


def stage(
    transport: Transport,
    base_dir: str,
    spec: JobSpec,
    tasks: Sequence[Sequence[int]],
    *,
    claim: bool = False,
    payload: bytes | None = None,
) -> str:
    """Create the private job directory under ``base_dir`` and write the payload; return its path.

    One remote command checks ``base_dir`` (and the path to it), creates the job
    directory (it must not exist yet) and stores the payload. Files written later into the
    job directory are safe: nobody but the login user can change it. ``payload`` is the
    already encoded payload (from :func:`encode_payload_and_code`), if any.
    """
    base = transport.expand(base_dir)
    job_dir = job_dir_for(base, spec)
    if payload is None:
        payload = encode_payload(spec, tasks, claim=claim)
    result = remote_script.run_script(transport, render_stage(base, job_dir), payload, timeout=600)
    if not result.ok:
        unsafe = remote_script.unsafe_from_stderr(result.stderr, transport.host)
        if unsafe is not None:
            raise unsafe
        raise CommandError(result)
    return job_dir


@attrs.frozen
class OutcomeFiles:
    """Which calls have written their outcome (and which of those failed), from one listing of ``out/``."""

    done: frozenset[int]
    failed: frozenset[int]
    exit_tasks: frozenset[int]

    def complete(self, size: int) -> bool:
        """True when every call ``0..size-1`` has its outcome file."""
        return len(self.done) >= size and all(i in self.done for i in range(size))


def outcome_files(names: Sequence[str]) -> OutcomeFiles:
    """Read a listing of ``out/`` (pure): outcome files, failure markers and exit-code files."""
    done, failed, exits = set(), set(), set()
    for name in names:
        stem, _, suffix = name.partition(".")
        if suffix == "pkl" and stem.isdigit():
            done.add(int(stem))
        elif suffix == "failed" and stem.isdigit():
            failed.add(int(stem))
        elif suffix == "exit" and stem.startswith("task-") and stem[5:].isdigit():
            exits.add(int(stem[5:]))
    return OutcomeFiles(frozenset(done), frozenset(failed & done), frozenset(exits))


def runner_argv(python: str, job_dir: str, task: str | int | None = None) -> list[str]:
    """The argv that runs the runner; ``task`` may be a shell expression like ``$SLURM_ARRAY_TASK_ID``."""
    argv = [python, "-m", "clustrix.remote.runner", job_dir]
    if task is not None:
        argv += ["--task", str(task)]
    return argv


def check_private_remote(transport: Transport, path: str, *, owner: int | None = None, kind: str = "d") -> None:
    """Refuse to read from ``path`` if another user could have written it.

    ``path`` is looked at with ``lstat``: it must be a directory (``kind="d"``) or a
    regular file (``kind="f"``), not a symbolic link, not group or other writable and,
    when ``owner`` (a uid) is given, belong to that user.
    """
    st = transport.lstat(path)
    word = None
    if stat.S_ISLNK(st.st_mode):
        word = "symlink"
    elif kind == "d" and not stat.S_ISDIR(st.st_mode):
        word = "not-directory"
    elif kind == "f" and not stat.S_ISREG(st.st_mode):
        word = "not-file"
    elif owner is not None and st.st_uid != owner:
        word = "foreign-owner"
    elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        word = "writable"
    if word is not None:
        detail = f"uid {st.st_uid}, the login user is uid {owner}" if word == "foreign-owner" else ""
        raise remote_script.unsafe_error(path, word, transport.host, detail)


def _login_uid(transport: Transport) -> int:
    """The uid the transport acts as: this process's, or the owner of the remote home."""
    if isinstance(transport, LocalTransport):
        return os.geteuid()
    return transport.stat(transport.expand("~")).st_uid


def read_outcomes(transport: Transport, job_dir: str, size: int) -> list[Outcome | None]:
    """Read every call's outcome of a finished job; None where a call wrote none.

    The work dir above the job, the job dir, ``out/`` and each outcome file must belong
    to the login user, be writable by nobody else and be no symbolic link; the first that
    is not raises :class:`clustrix.errors.UnsafePathError` naming it and why.
    """
    owner = _login_uid(transport)
    check_private_remote(transport, posixpath.dirname(job_dir.rstrip("/")), owner=owner)
    check_private_remote(transport, job_dir, owner=owner)
    out_dir = posixpath.join(job_dir, runner.OUT_DIR)
    check_private_remote(transport, out_dir, owner=owner)
    present = set(transport.listdir(out_dir))
    outcomes: list[Outcome | None] = []
    for index in range(size):
        name = runner.outcome_name(index)
        if posixpath.basename(name) not in present:
            outcomes.append(None)
            continue
        path = posixpath.join(job_dir, name)
        check_private_remote(transport, path, owner=owner, kind="f")
        outcomes.append(decode_outcome(transport.read_bytes(path)))
    return outcomes


def finished_tasks(transport: Transport, job_dir: str) -> dict[int, int]:
    """Array task number to runner exit code, for every task that wrote its exit-code file."""
    out_dir = posixpath.join(job_dir, runner.OUT_DIR)
    done: dict[int, int] = {}
    try:
        names = transport.listdir(out_dir)
    except FileNotFoundError:
        return done
    for name in names:
        if name.startswith("task-") and name.endswith(".exit"):
            try:
                code = int(transport.read_bytes(posixpath.join(out_dir, name)).decode().strip() or "1")
            except (FileNotFoundError, ValueError):
                continue
            done[int(name[len("task-") : -len(".exit")])] = code
    return done
