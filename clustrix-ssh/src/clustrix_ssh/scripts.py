"""The shell the ``ssh`` backend sends: launch a detached job, poll many jobs, cancel one.

Pure functions from values to POSIX sh text; every value is quoted with
:func:`shlex.quote` (``prelude`` lines are the user's own shell, already rendered by
:mod:`clustrix.remote.environment`). Each script is one remote command whose text travels on
stdin (:mod:`clustrix.remote.scripts`), so a submit, a poll round for any number of jobs,
or a cancel is one remote command and no script is ever in a process's arguments.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Sequence

import attrs

from clustrix.batch.shell import COUNT_FUNCTIONS
from clustrix.remote import runner
from clustrix.remote import scripts as remote_script
from clustrix.remote.environment.activation import VARIABLES_FILE
from clustrix.remote.report import FRAME_FUNCTIONS

STDOUT = "stdout"
STDERR = "stderr"
DRIVER = "driver.sh"
CANCELLED = "cancelled"


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
        limit = (
            "P=$(( $(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)"
            f' / {per_call} )); [ "$P" -ge 1 ] || P=1'
        )
    tasks = " ".join(str(t) for t in range(n_tasks))
    return "\n".join(
        [
            f"cd -- {q(job_dir)} || exit 1",  # before the prelude: nothing runs in the directory it started in
            *prelude,
            limit,
            f"printf '%s\\n' {tasks} | xargs -n 1 -P \"$P\" {q(python)} -m clustrix.remote.runner {q(job_dir)} --task",
            "",
        ]
    )


def render_detach(job_dir: str) -> str:
    """The line that starts the job's driver in its own session, detached, output to the job's files."""
    q = shlex.quote
    driver_path = posixpath.join(job_dir, DRIVER)
    return (
        f"setsid nohup sh {q(driver_path)} </dev/null >{q(posixpath.join(job_dir, STDOUT))} "
        f"2>{q(posixpath.join(job_dir, STDERR))} &"
    )


def render_launch(*, base_dir: str, job_dir: str, driver_size: int, variables_size: int = 0) -> str:
    """Check the work dir, create the private job dir, store driver and payload, start the driver detached.

    The script comes on stdin (see :mod:`clustrix.remote.scripts`), followed by the
    driver's ``driver_size`` bytes, the job's variables file (``variables_size`` bytes, the
    values of ``environment_variables``, stored 0600 and sourced by the driver) and then the
    payload: none of them ever appears in a process's arguments. The driver runs under
    ``setsid`` (its own session and process group, which survives the SSH connection) with
    ``nohup``, stdin from /dev/null and output to files; the script prints ``pgid <N>``.
    """
    q = shlex.quote
    payload = posixpath.join(job_dir, runner.PAYLOAD)
    driver_path = posixpath.join(job_dir, DRIVER)
    variables = posixpath.join(job_dir, VARIABLES_FILE)
    out = posixpath.join(job_dir, runner.OUT_DIR)
    detach = render_detach(job_dir)
    return "\n".join(
        [
            remote_script.CHECK_FUNCTIONS,
            # without its own session the job's process group is not one clustrix can find or kill
            "command -v setsid >/dev/null 2>&1 || "
            "{ echo 'clustrix: setsid (util-linux) is not installed on this host; the ssh backend needs it "
            "to detach jobs' >&2; exit 3; }",
            # whoever can write the work directory could swap a job directory before it is read
            *remote_script.render_work_dir_check(base_dir),
            "set -e",
            f"mkdir -m 700 {q(job_dir)} {q(out)}",
            remote_script.render_receive(driver_path, driver_size),
            *(
                [remote_script.render_receive(variables, variables_size), f"chmod 600 {q(variables)}"]
                if variables_size
                else []
            ),
            f"cat > {q(payload + '.tmp')}",
            f"mv {q(payload + '.tmp')} {q(payload)}",
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


_PREAMBLE = [
    *FRAME_FUNCTIONS,
    *COUNT_FUNCTIONS,
    'live=""',
    # the live processes as "PGID STAT ARGS" lines (empty where ps is missing)
    "refresh() {",
    "  live=$(ps -ww -e -o pgid= -o stat= -o args= 2>/dev/null | awk '$2 !~ /^Z/')",
    "}",
    # alive PGID JOBID: a live process of that group runs something of that job, whose id
    # is in the job dir's name (ASCII, unlike some paths ps would print as "?"); a process
    # group id reused by an unrelated program, long after the job died, does not count
    "alive() {",
    '  if [ -n "$live" ]; then',
    '    printf \'%s\\n\' "$live" | D="$2" awk -v g="$1" \'$1 == g && index($0, ENVIRON["D"]) {f = 1} END {exit !f}\'',
    "    return",
    "  fi",
    '  kill -0 "-$1" 2>/dev/null',
    "}",
    "finished() {",
    '  n=0; for f in "$1"/out/task-*.exit; do [ -f "$f" ] && n=$((n + 1)); done; [ "$n" -ge "$2" ]',
    "}",
    'worst() { cat "$1"/out/task-*.exit 2>/dev/null | sort -n | tail -n 1; }',
    "check() {",
    '  if finished "$2" "$4"; then echo "$1 done $(worst "$2")"; outcomes "$1" "$2" auto; return; fi',
    '  if alive "$3" "$1"; then echo "$1 running $(counts "$2")"; return; fi',
    '  if finished "$2" "$4"; then echo "$1 done $(worst "$2")"; outcomes "$1" "$2" auto; return; fi',
    f'  if [ -e "$2/{CANCELLED}" ]; then echo "$1 cancelled"; else echo "$1 gone"; fi',
    '  outcomes "$1" "$2" auto',
    "}",
]


def render_poll(items: Sequence[PollItem]) -> str:
    """One script that reports every job: exit files first, then whether its process group lives.

    A group counts as alive if ``ps`` lists a non-zombie member (where ``ps`` is missing,
    ``kill -0`` decides); exit files are checked again after, so a job that finished
    between the two checks is ``done``, not ``gone``. A job in a final state is followed by
    its outcomes (see ``outcomes`` above), so fetching it needs no further command.
    """
    q = shlex.quote
    lines = [*_PREAMBLE, "refresh"]
    for item in items:
        lines.append(f"check {q(item.job_id)} {q(item.job_dir)} {int(item.pgid)} {int(item.n_tasks)}")
    return "\n".join(lines) + "\n"


def render_watch(item: PollItem, *, seconds: float, interval: float = 0.05) -> str:
    """Wait on the remote side until the job is final (or ``seconds`` passed), then report it.

    Exit files are looked for every 10 ms for the first half second (a quick call's result
    is noticed at once), then every ``interval``; whether the process group still lives and
    the time limit, every 20 looks. The report is the poll's (``ID done|running|...`` plus
    outcomes), so a watched call costs its submit and this one command.
    """
    q = shlex.quote
    job_dir = q(item.job_dir)
    return "\n".join(
        [
            *_PREAMBLE,
            "refresh; i=0; d=0.01; start=$(date +%s)",
            f"while ! finished {job_dir} {int(item.n_tasks)}; do",
            f'  i=$((i + 1)); [ "$i" -eq 50 ] && d={float(interval)}',
            "  if [ $((i % 20)) -eq 0 ]; then",
            f"    refresh; alive {int(item.pgid)} {q(item.job_id)} || break",
            f"    [ $(($(date +%s) - start)) -ge {int(seconds)} ] && break",
            "  fi",
            '  sleep "$d" 2>/dev/null || sleep 1',
            "done",
            "refresh",
            f"check {q(item.job_id)} {job_dir} {int(item.pgid)} {int(item.n_tasks)}",
            "",
        ]
    )


def render_fetch(*, job_id: str, job_dir: str, raw: bool) -> str:
    """Print the job's outcome frame: raw bytes when the transport returns bytes, else base64."""
    q = shlex.quote
    return "\n".join([*_PREAMBLE, f"outcomes {q(job_id)} {q(job_dir)} {'raw' if raw else 'base64'}", ""])


#: How long a cancelled job's processes get after SIGTERM before SIGKILL.
CANCEL_GRACE_SECONDS = 5.0


def render_cancel(*, job_dir: str, pgid: int) -> str:
    """Mark the job cancelled, TERM its process group, and KILL what is left after the grace period."""
    q = shlex.quote
    steps = int(CANCEL_GRACE_SECONDS * 10)
    return "\n".join(
        [
            *_PREAMBLE,
            "refresh",
            # a finished job's group id may since belong to another program of this user: leave it
            f"alive {int(pgid)} {q(posixpath.basename(job_dir))} || exit 0",
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
