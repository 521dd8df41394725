"""The shell the batch engine sends: each operation is one ``sh -c`` command (pure rendering).

Every value is quoted with :func:`shlex.quote`; scheduler commands arrive as argv lists
from the dialect and are quoted element by element. The scripts print line-oriented
reports that :mod:`clustrix.batch.reports` reads back; lines the engine reads start with
a per-script marker (``@<token>``), so nothing a scheduler command prints can be taken for
one of them.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Mapping, Sequence

import attrs

from clustrix.remote import runner
from clustrix.remote import scripts as remote_script
from clustrix.remote.report import FRAME_FUNCTIONS

#: The marker file a cancel leaves in the job directory, so the job ends CANCELLED (and the
#: runner ends at the scheduler's warning signal at once, see :data:`clustrix.remote.runner.CANCELLED`).
CANCELLED = runner.CANCELLED
#: Exit code of the submit script when a file cannot be stored (full or read-only file system).
WRITE_FAILED_EXIT = 5
#: Exit code of :func:`render_command_check`'s lines when some of the scheduler's commands are
#: missing (they follow :data:`MISSING_MARK` on stderr, space-separated).
MISSING_COMMANDS_EXIT = 6
MISSING_MARK = "clustrix-missing-commands:"


def render_command_check(commands: Sequence[str]) -> list[str]:
    """Shell lines that stop the script (:data:`MISSING_COMMANDS_EXIT`) when a command is not on PATH."""
    if not commands:
        return []
    names = " ".join(shlex.quote(name) for name in commands)
    return [
        f'missing=; for c in {names}; do command -v "$c" >/dev/null 2>&1 || missing="$missing $c"; done',
        f'[ -z "$missing" ] || {{ printf \'%s%s\\n\' {shlex.quote(MISSING_MARK)} "$missing" >&2; '
        f"exit {MISSING_COMMANDS_EXIT}; }}",
    ]


def missing_commands(code: int, stderr: str) -> list[str]:
    """The commands a script of :func:`render_command_check` found missing; [] if it did not stop for that."""
    if code != MISSING_COMMANDS_EXIT:
        return []
    for line in stderr.splitlines():
        if line.startswith(MISSING_MARK):
            return line[len(MISSING_MARK) :].split()
    return []


def command_line(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """``argv`` as one shell command, each element quoted, prefixed with ``env NAME=value`` when given."""
    prefix = ["env", *(f"{name}={value}" for name, value in (env or {}).items())] if env else []
    return shlex.join([*prefix, *argv])


@attrs.frozen(kw_only=True)
class StagedFile:
    """A file the submit script stores in the job directory: the next ``size`` bytes of its stdin."""

    name: str
    size: int
    mode: int = 0o600


def render_submit(
    *,
    base_dir: str,
    job_dir: str,
    files: Sequence[StagedFile],
    submit: str,
    marker: str,
) -> str:
    """Create the private job directory, store ``files`` from stdin (in order), then submit.

    ``base_dir`` (``remote_work_dir``) is created private or refused by
    :mod:`clustrix.remote.scripts`'s checks, in this same command, before anything is written;
    the job directory is made new (``mkdir -m 700`` fails if it exists). Every stored file is
    checked for its full size, so a full file system stops here with a message naming the
    path (exit :data:`WRITE_FAILED_EXIT`), never with a half-written payload. The line
    ``@marker staged`` is printed before ``submit`` (a shell command line) runs in the job
    directory: whatever follows is the scheduler's answer, and the script exits with its code.
    """
    q = shlex.quote
    out = posixpath.join(job_dir, runner.OUT_DIR)
    lines = [
        remote_script.CHECK_FUNCTIONS,
        'fail() { printf \'clustrix: %s\\n\' "$1" >&2; exit "$2"; }',
        *remote_script.render_work_dir_check(base_dir),
        f"mkdir -m 700 {q(job_dir)} {q(out)} || fail {q(f'cannot create {job_dir}')} {WRITE_FAILED_EXIT}",
    ]
    for staged in files:
        path = posixpath.join(job_dir, staged.name)
        full = f"cannot write {path} ({staged.size} bytes): the file system is full or read-only"
        lines.append(
            f"{{ {remote_script.render_receive(path, staged.size)}; }} && "
            f'[ "$(wc -c < {q(path)})" -eq {int(staged.size)} ] || fail {q(full)} {WRITE_FAILED_EXIT}'
        )
        lines.append(f"chmod {staged.mode:o} {q(path)}")
    lines += [
        f"cd {q(job_dir)} || exit 1",
        f"echo {q('@' + marker)} staged",
        f"exec {submit}",
        "",
    ]
    return "\n".join(lines)


#: Shell function ``counts DIR``: prints ``OUTCOMES FAILED CLAIMS`` of the job in ``DIR``, the runner's
#: per-call files read in one pass (shared by every backend that runs :mod:`clustrix.remote.runner`).
#: FAILED counts the outcomes whose ``.failed`` marker exists (made before the outcome, so never
#: missed); claims are counted after the outcomes, so a call that ends between the two is still
#: started. :func:`clustrix.batch.status.call_counts` turns the three numbers into counts of calls.
COUNT_FUNCTIONS = (
    "counts() {",
    '  ( cd -- "$1/out" 2>/dev/null || { echo 0 0 0; exit 0; }',
    '    o=0; n=0; for f in *.pkl; do [ -f "$f" ] || continue; o=$((o + 1))',
    '      [ -e "${f%.pkl}.failed" ] && n=$((n + 1)); done',
    '    k=0; for f in *.claim; do [ -f "$f" ] && k=$((k + 1)); done',
    '    echo "$o $n $k" )',
    "}",
)


@attrs.frozen(kw_only=True)
class PollJob:
    """One open job of a poll round, as the poll script needs it."""

    job_id: str
    job_dir: str
    n_tasks: int
    n_calls: int
    #: A shell command line that cancels the array's pending tasks, run (once) when every call is done.
    sweep: str | None = None


@attrs.frozen(kw_only=True)
class Wait:
    """What a watch waits for before its poll round (see :func:`render_poll`)."""

    #: A shell command line that exits 0 while the job may still run, or None (files and time only).
    alive: str | None
    #: The longest wait, in seconds; the engine sends the watch again while the job runs.
    seconds: float
    #: Seconds between looks at the files after the first half second (every 10 ms before).
    interval: float = 0.05


def render_wait(job: PollJob, wait: Wait) -> list[str]:
    """Shell lines that wait until ``job``'s files are complete, its ``alive`` command fails, or time is up.

    The files are looked at every 10 ms for the first half second (a quick call's result is
    noticed at once), then every ``interval``; ``alive`` and the time limit every 20 looks.
    """
    complete = f"complete {shlex.quote(job.job_dir)} {int(job.n_tasks)} {int(job.n_calls)}"
    alive = f"{{ {wait.alive}; }} >/dev/null 2>&1 || break" if wait.alive else ":"
    return [
        "i=0; d=0.01; start=$(date +%s)",
        f"while ! {complete}; do",
        f'  i=$((i + 1)); [ "$i" -eq 50 ] && d={float(wait.interval)}',
        "  if [ $((i % 20)) -eq 0 ]; then",
        f"    {alive}",
        f"    [ $(($(date +%s) - start)) -ge {int(wait.seconds)} ] && break",
        "  fi",
        '  sleep "$d" 2>/dev/null || sleep 1',
        "done",
    ]


def render_poll(jobs: Sequence[PollJob], *, status: str | None, marker: str, wait: Wait | None = None) -> str:
    """One poll round for every open job of a host: the status query, then each job's files.

    The scheduler is asked first (only if some job's files are not complete yet), and the
    files are read after it: a task that ended between the two is seen by its files, so a
    final scheduler state never meets stale files (the race of "files first, then query").

    Prints, all lines starting with ``@marker``:
    ``status-begin`` / the query's stdout / ``status-end RC`` / ``status-err LINE`` (its stderr);
    per job ``JOB files EXITS`` with ``EXITS`` as ``task:code`` words, ``JOB outs N F``
    (outcomes, F of them of calls that raised), ``JOB claims N`` (calls some task has
    started), ``JOB failed I I ...``, ``JOB cancelled`` if marked, and when every call or every task is
    done, the job's outcome frame (:mod:`clustrix.remote.report`, mode ``auto``).

    With ``wait`` (a *watch*, for one job), the round runs after :func:`render_wait`'s lines.
    """
    q = shlex.quote
    m = "@" + marker
    lines = [
        *FRAME_FUNCTIONS,
        *COUNT_FUNCTIONS,
        # complete DIR NTASKS NCALLS: every task's exit file, or every call's outcome, is there
        "complete() {",
        '  ( cd -- "$1/out" 2>/dev/null || exit 1',
        '    e=0; for f in task-*.exit; do [ -f "$f" ] && e=$((e + 1)); done',
        '    o=0; for f in *.pkl; do [ -f "$f" ] && o=$((o + 1)); done',
        '    [ "$e" -ge "$2" ] || [ "$o" -ge "$3" ] )',
        "}",
        "files() {",
        f'  ( cd -- "$2/out" 2>/dev/null || {{ echo {q(m)} "$1" files; exit 0; }}',
        '    x=""; for f in task-*.exit; do [ -f "$f" ] || continue; t=${f#task-}; t=${t%.exit}',
        '      c=$(cat "$f" 2>/dev/null); x="$x $t:${c:-1}"; done',
        f'    echo {q(m)} "$1" files$x',
        '    x=""; for f in *.failed; do [ -f "$f" ] && x="$x ${f%.failed}"; done',
        f'    echo {q(m)} "$1" failed$x )',
        '  set -- "$1" "$2" $(counts "$2")',
        f'  echo {q(m)} "$1" outs "$3" "$4"; echo {q(m)} "$1" claims "$5"',
        f'  [ -e "$2/{CANCELLED}" ] && echo {q(m)} "$1" cancelled',
        "  return 0",
        "}",
    ]
    if wait is not None:
        lines += render_wait(jobs[0], wait)
    lines.append("open=0")
    for job in jobs:
        lines.append(f"complete {q(job.job_dir)} {int(job.n_tasks)} {int(job.n_calls)} || open=1")
    if status is not None:
        lines += [
            'if [ "$open" = 1 ]; then',
            '  err=$(mktemp 2>/dev/null || echo "/tmp/clustrix-status.$$")',
            f"  echo {q(m)} status-begin",
            f'  {{ {status}; }} 2>"$err"; rc=$?',
            f'  echo; echo {q(m)} status-end "$rc"',
            f'  sed "s/^/{m} status-err /" "$err"; rm -f "$err"',
            "fi",
        ]
    for job in jobs:
        jd, ji = q(job.job_dir), q(job.job_id)
        lines.append(f"files {ji} {jd}")
        frame = f"outcomes {ji} {jd} auto"
        if job.sweep:
            frame += f"; {job.sweep} >/dev/null 2>&1; echo {q(m)} {ji} swept"
        lines.append(f"if complete {jd} {int(job.n_tasks)} {int(job.n_calls)}; then {frame}; fi")
    return "\n".join(lines) + "\n"


def render_query(query: str, *, marker: str) -> str:
    """Run one scheduler query (history, site), framed like the poll's status query."""
    m = "@" + marker
    return "\n".join(
        [
            'err=$(mktemp 2>/dev/null || echo "/tmp/clustrix-query.$$")',
            f"echo {shlex.quote(m)} status-begin",
            f'{{ {query}; }} 2>"$err"; rc=$?',
            f'echo; echo {shlex.quote(m)} status-end "$rc"',
            f'sed "s/^/{m} status-err /" "$err"; rm -f "$err"',
            "",
        ]
    )


def render_fetch(*, job_id: str, job_dir: str) -> str:
    """Print the job's outcome frame as raw bytes (every transport's ``run_bytes`` returns them as printed)."""
    q = shlex.quote
    return "\n".join([*FRAME_FUNCTIONS, f"outcomes {q(job_id)} {q(job_dir)} raw", ""])


def render_cancel(*, job_dir: str, cancel: str) -> str:
    """Mark the job cancelled (so it ends CANCELLED whatever the scheduler calls it), then cancel it."""
    return f"touch {shlex.quote(posixpath.join(job_dir, CANCELLED))} 2>/dev/null\nexec {cancel}\n"


def render_logs(*, job_dir: str, names: Sequence[tuple[int, str]], limit: int, marker: str) -> str:
    """Print the log files of the failed tasks (those whose exit file is missing or not 0), at most ``limit``.

    ``names`` is (engine task, file name) for every task. When no task failed, the first
    ``limit`` tasks' logs are printed. Each file follows a line ``@marker log TASK``.
    """
    q = shlex.quote
    m = "@" + marker
    lines = [f"cd {q(job_dir)} 2>/dev/null || exit 0", "failed=''", "all=''"]
    for task, name in names:
        exit_file = posixpath.join(runner.OUT_DIR, f"task-{task}.exit")
        lines.append(f'all="$all {task}:{name}"')
        lines.append(f'[ "$(cat {q(exit_file)} 2>/dev/null)" = 0 ] || failed="$failed {task}:{name}"')
    lines += [
        "set -- $failed; [ $# -gt 0 ] || set -- $all",
        "n=0",
        "for item; do",
        f'  [ "$n" -ge {int(limit)} ] && break',
        "  t=${item%%:*}; f=${item#*:}",
        f'  [ -f "$f" ] || continue; n=$((n + 1)); echo {q(m)} log "$t"; cat -- "$f"; echo',
        "done",
        "",
    ]
    return "\n".join(lines)
