"""Job directories on the machine that runs the job: staging the payload, reading outcomes back.

Every plugin that runs :mod:`clustrix.remote.runner` remotely (ssh, slurm, pbs, sge) shares
these functions, so the layout documented in :mod:`clustrix.remote.runner` lives in one place.
"""

from __future__ import annotations

import os
import pickle
import posixpath
import shlex
import stat
from collections.abc import Sequence
from typing import Any

import attrs

from clustrix.plugin.transport import CommandError, LocalTransport, Transport
from clustrix.plugin.types import JobSpec, Outcome
from clustrix.remote import runner
from clustrix.remote import scripts as remote_script
from clustrix.remote.environment.interpreter import RUNNER_MODULES
from clustrix.remote.localcode.detection import dumps_recording
from clustrix.remote.localcode.plan import CodePlan, plan_code


def plan_tasks(size: int, max_tasks: int | None = None) -> list[list[int]]:
    """Split call indices ``0..size-1`` into at most ``max_tasks`` contiguous, balanced tasks."""
    if size <= 0:
        return []
    n_tasks = size if not max_tasks else max(1, min(size, max_tasks))
    base, rest = divmod(size, n_tasks)
    tasks, start = [], 0
    for task in range(n_tasks):
        count = base + (1 if task < rest else 0)
        tasks.append(list(range(start, start + count)))
        start += count
    return tasks


def _payload(spec: JobSpec, tasks: Sequence[Sequence[int]], claim: bool) -> dict[str, Any]:
    return {"func": spec.func, "arguments": list(spec.arguments), "tasks": [list(t) for t in tasks], "claim": claim}


def encode_payload(spec: JobSpec, tasks: Sequence[Sequence[int]], *, claim: bool = False) -> bytes:
    """The bytes of ``payload.pkl``; ``claim`` turns on dynamic packing (see :mod:`clustrix.remote.runner`)."""
    return runner.dumps(_payload(spec, tasks, claim))


def encode_payload_and_code(
    spec: JobSpec,
    tasks: Sequence[Sequence[int]],
    *,
    claim: bool = False,
    needs: Sequence[str] = RUNNER_MODULES,
) -> tuple[bytes, CodePlan]:
    """The payload's bytes and the user's local code it needs (pickled once, for every call of the job).

    ``needs`` are the modules the job's runner imports besides the payload's (shipped too
    when they are local, e.g. an editable clustrix-core). Raises
    :class:`clustrix.remote.localcode.units.LocalCodeError` for code that cannot travel; send the plan
    with :func:`clustrix.remote.localcode.shipping.ship` and put its ``prelude`` in the job's shell.
    """
    data, referenced = dumps_recording(_payload(spec, tasks, claim))
    return data, plan_code(referenced, spec.config, needs=needs)


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


def runner_shell_command(python: str, job_dir: str, task_variable: str | None = None) -> str:
    """A shell line that runs the runner, every value quoted; ``task_variable`` names an env var."""
    line = shlex.join(runner_argv(python, job_dir))
    if task_variable:
        line += f' --task "${{{task_variable}}}"'
    return line


def decode_outcome(data: bytes) -> Outcome:
    """Turn an outcome file's bytes into an :class:`Outcome` (see :mod:`clustrix.remote.runner`).

    Bytes that are no outcome record make that call's failed outcome, so they are
    unpickled once only (a fetch that raised would be retried, unpickling them again).
    """
    try:
        record = pickle.loads(data)
        if not isinstance(record, dict) or "ok" not in record:
            raise ValueError(f"found {type(record).__name__}, not an outcome record")
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file fails its call, once
        return Outcome(
            ok=False,
            error_type=f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins."),
            error_message=f"the outcome file could not be read: {type(exc).__name__}: {exc}",
        )
    if record["ok"]:
        try:
            value = pickle.loads(record["value"])
        except Exception as exc:  # noqa: BLE001 - e.g. the value's class is not importable here
            return Outcome(
                ok=False,
                error_type=runner.type_name(exc).removeprefix("builtins."),
                error_message=f"the call returned a value that cannot be unpickled here: {type(exc).__name__}: {exc}",
            )
        return Outcome(ok=True, value=value)
    exception = None
    if record.get("exception") is not None:
        try:
            exception = pickle.loads(record["exception"])
        except Exception:  # noqa: BLE001 - an exception class missing here degrades to JobError
            exception = None
    return Outcome(
        ok=False,
        exception=exception if isinstance(exception, BaseException) else None,
        error_type=record.get("type"),
        error_message=record.get("message"),
        traceback=record.get("traceback"),
    )


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
    is not raises :class:`clustrix.remote.runner.UnsafePathError` naming it and why.
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
