"""The shell the ``ssh`` backend sends: launch a detached job, poll many jobs, cancel one.

Pure functions from values to POSIX sh text; every value is quoted with
:func:`shlex.quote` (``prelude`` lines are the user's own shell, already rendered by
:mod:`clustrix.environment`). Each script is sent as one ``sh -c`` command, so a
submit, a poll round for any number of jobs, or a cancel is one remote command.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Sequence

import attrs

from clustrix import runner

STDOUT = "stdout"
STDERR = "stderr"
DRIVER = "driver.sh"
CANCELLED = "cancelled"

#: Sent by a poll: "<job id> done <max exit code>" | "<job id> running" | "<job id> gone" | "<job id> cancelled"
POLL_WORDS = ("done", "running", "gone", "cancelled")


def render_driver(
    *, python: str, job_dir: str, n_tasks: int, parallel: int | None, cores: int | None, prelude: Sequence[str]
) -> str:
    """The script that runs in the job's own session: prepare the shell, run every task, bounded.

    ``parallel`` (``max_parallel_jobs``) caps concurrent runner processes; without it,
    the host's core count divided by the cores each call asked for.
    """
    q = shlex.quote
    if parallel:
        limit = f"P={int(parallel)}"
    else:
        per_call = max(1, int(cores or 1))
        limit = f'P=$(( $(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1) / {per_call} )); [ "$P" -ge 1 ] || P=1'
    tasks = " ".join(str(t) for t in range(n_tasks))
    return "\n".join(
        [
            *prelude,
            f"cd {q(job_dir)} || exit 1",
            limit,
            f"printf '%s\\n' {tasks} | xargs -P \"$P\" -I TASK {q(python)} -m clustrix.runner {q(job_dir)} --task TASK",
            "",
        ]
    )


def render_launch(*, base_dir: str, job_dir: str, driver: str) -> str:
    """Create the private job dir, store the payload read from stdin, start the driver detached.

    The driver runs under ``setsid`` (its own session and process group, which survives
    the SSH connection) with ``nohup``, stdin from /dev/null and output to files; the
    script prints ``pgid <N>``.
    """
    q = shlex.quote
    payload = posixpath.join(job_dir, runner.PAYLOAD)
    driver_path = posixpath.join(job_dir, DRIVER)
    out = posixpath.join(job_dir, runner.OUT_DIR)
    detach = (
        'if command -v setsid >/dev/null 2>&1; then detach="setsid"; else detach=""; fi; '
        f"$detach nohup sh {q(driver_path)} </dev/null >{q(posixpath.join(job_dir, STDOUT))} "
        f"2>{q(posixpath.join(job_dir, STDERR))} &"
    )
    return "\n".join(
        [
            "umask 077",
            "set -e",
            f"mkdir -p {q(base_dir)}",
            f"mkdir -m 700 {q(job_dir)} {q(out)}",
            f"cat > {q(payload + '.tmp')}",
            f"mv {q(payload + '.tmp')} {q(payload)}",
            f"printf '%s' {q(driver)} > {q(driver_path)}",
            "set +e",
            detach,
            'echo "pgid $!"',
            "",
        ]
    )


@attrs.frozen
class PollItem:
    job_id: str
    job_dir: str
    pgid: int
    n_tasks: int


def render_poll(items: Sequence[PollItem]) -> str:
    """One script that reports every job: exit files first, then whether its process group lives.

    A group counts as alive if ``ps`` lists a non-zombie member (where ``ps`` is missing,
    ``kill -0`` decides); exit files are checked again after, so a job that finished
    between the two checks is ``done``, not ``gone``.
    """
    q = shlex.quote
    lines = [
        "live=$(ps -e -o pgid= -o stat= 2>/dev/null | awk '$2 !~ /^Z/ {print $1}' | tr '\\n' ' ')",
        'alive() { if [ -n "$live" ]; then case " $live " in *" $1 "*) return 0;; esac; return 1; fi; kill -0 "-$1" 2>/dev/null; }',
        'finished() { n=0; for f in "$1"/out/task-*.exit; do [ -f "$f" ] && n=$((n + 1)); done; [ "$n" -ge "$2" ]; }',
        'worst() { cat "$1"/out/task-*.exit 2>/dev/null | sort -n | tail -n 1; }',
        "check() {",
        '  if finished "$2" "$4"; then echo "$1 done $(worst "$2")"; return; fi',
        '  if alive "$3"; then echo "$1 running"; return; fi',
        '  if finished "$2" "$4"; then echo "$1 done $(worst "$2")"; return; fi',
        f'  if [ -e "$2/{CANCELLED}" ]; then echo "$1 cancelled"; else echo "$1 gone"; fi',
        "}",
    ]
    for item in items:
        lines.append(f"check {q(item.job_id)} {q(item.job_dir)} {int(item.pgid)} {int(item.n_tasks)}")
    return "\n".join(lines) + "\n"


def render_cancel(*, job_dir: str, pgid: int, grace_seconds: float = 5.0) -> str:
    """Mark the job cancelled, TERM its process group, and KILL what is left after the grace period."""
    q = shlex.quote
    steps = max(1, int(grace_seconds * 10))
    return "\n".join(
        [
            f"touch {q(posixpath.join(job_dir, CANCELLED))} 2>/dev/null",
            f"kill -TERM -{int(pgid)} 2>/dev/null || exit 0",
            f"i=0; while [ $i -lt {steps} ] && kill -0 -{int(pgid)} 2>/dev/null; do",
            "  if ! ps -e -o pgid= -o stat= 2>/dev/null | awk -v g="
            + str(int(pgid))
            + " '$1 == g && $2 !~ /^Z/ {f=1} END {exit !f}'; then break; fi",
            "  sleep 0.1; i=$((i + 1)); done",
            f"kill -KILL -{int(pgid)} 2>/dev/null",
            "exit 0",
            "",
        ]
    )
