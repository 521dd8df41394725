"""The ``ssh`` backend: a batch :class:`~clustrix.batch.dialect.Dialect` whose scheduler is the host itself.

The batch engine (:mod:`clustrix.batch.engine`) stages, polls, fetches, cancels and reads logs
as for any scheduler; this module only says how a job starts, lives and ends on a plain host:

- **submit** starts the job script detached in its own session (``setsid nohup sh job.sh
  </dev/null >stdout 2>stderr &``), so it survives a dropped connection and the exit of the
  submitting process, and prints ``PGID:JOBID``: the native id.
- **status** is one ``ps`` for every job of the host: a job is running while a live
  (non-zombie) process of its group runs something of its job directory (the job id is in
  its path), so a group id the system reused for another program never counts. Where ``ps``
  is missing, ``kill -0`` decides. The engine's files decide the end; a job whose processes
  are gone without every exit file is FAILED at the next round (:meth:`SSHDialect.lost_reason`).
- **watch**: the engine waits on the host for the job's files right after the submit
  (:attr:`~clustrix.batch.dialect.Dialect.watch`), so a warm call costs two commands.
- **cancel** sends ``TERM`` to the group, then ``KILL`` after :data:`CANCEL_GRACE_SECONDS`.

The job script runs the job's tasks with ``xargs -P``: at most ``max_parallel_jobs`` at once,
else the host's core count divided by the ``cores`` each call asked for. A ``time`` limit is
coreutils ``timeout`` around each task; a task it ended leaves the exit code
:data:`TIMED_OUT`, which makes the job ``TIMEOUT``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from clustrix.batch.dialect import Dialect, ParseError, ScriptJob, TaskRecord
from clustrix.plugin.types import JobState
from clustrix.remote.runner import INPUTS_WAIT_ENV

#: At most this many runner tasks per job; calls beyond it are packed into the tasks.
MAX_TASKS = 64
#: ``timeout``'s exit code when the time limit ended a task.
TIMED_OUT = 124
#: How long a cancelled job's processes get after SIGTERM before SIGKILL.
CANCEL_GRACE_SECONDS = 5.0

#: ``sh -c`` arguments ``PGID:JOBID...``: prints ``PGID:JOBID RUNNING`` for each live job; ``$found`` is
#: set if any. ps gives "PGID STAT ARGS" lines; the job id (ASCII) is matched in the arguments.
_LIVE = r"""live=$(ps -ww -e -o pgid= -o stat= -o args= 2>/dev/null | awk '$2 !~ /^Z/'); found=
for id; do
  g=${id%%:*}; j=${id#*:}
  case $g in ''|*[!0-9]*) continue ;; esac
  [ -n "$j" ] && [ "$j" != "$id" ] || continue
  if [ -n "$live" ]; then
    printf '%s\n' "$live" | J="$j" awk -v g="$g" '$1 == g && index($0, ENVIRON["J"]) {f = 1} END {exit !f}' || continue
  else
    kill -0 "-$g" 2>/dev/null || continue
  fi
  found=1; echo "$id RUNNING"
done
"""

_CANCEL = (
    _LIVE
    + """[ -n "$found" ] || exit 0
g=${1%%:*}
kill -TERM "-$g" 2>/dev/null || exit 0
i=0; while [ $i -lt STEPS ] && kill -0 "-$g" 2>/dev/null; do
  ps -e -o pgid= -o stat= 2>/dev/null | awk -v g="$g" '$1 == g && $2 !~ /^Z/ {f=1} END {exit !f}' || break
  sleep 0.1; i=$((i + 1)); done
kill -KILL "-$g" 2>/dev/null
exit 0
""".replace("STEPS", str(int(CANCEL_GRACE_SECONDS * 10)))
)


class SSHDialect(Dialect):
    name = "ssh"
    label = "ssh"
    default_max_array_size = MAX_TASKS
    commands = ("setsid",)  # without its own session the job's process group is not one clustrix can find or kill
    commands_hint = "util-linux"
    extras = {
        "calls_per_task": "calls each runner task owns (fewer tasks, each running several calls)",
        "job_name": "accepted for portability; the host shows no job names",
    }
    states = {"RUNNING": JobState.RUNNING}
    lost_after_seconds = 0.0  # the status query runs before the files are read: gone and unfinished is final
    timeout_exit_code = TIMED_OUT
    watch = True

    def directives(self, job: ScriptJob) -> list[str]:
        return []

    def runner_prefix(self, job: ScriptJob) -> list[str]:
        seconds = job.resources.time
        # --foreground: timeout stays in the job's process group, so cancel reaches what it runs
        return ["timeout", "--foreground", "-k", "10", f"{seconds}s"] if seconds else []

    def render_script(self, job: ScriptJob) -> str:
        """``cd`` into the job dir, the prelude, then every task through ``xargs -P``, bounded."""
        if job.max_parallel:
            limit = f"P={int(job.max_parallel)}"
        else:
            per_call = max(1, int(job.resources.cores or 1))
            limit = (
                "P=$(( $(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)"
                f' / {per_call} )); [ "$P" -ge 1 ] || P=1'
            )
        run = shlex.join([*self.runner_prefix(job), job.python, job.runner_path, job.job_dir]) + " --task"
        if job.resources.time:  # a task the limit ended writes no exit file of its own: it gets timeout's code
            run = shlex.quote(
                f'{run} "$0"; c=$?; [ "$c" -ne {TIMED_OUT} ] || [ -e out/task-"$0".exit ] || '
                f'echo {TIMED_OUT} >out/task-"$0".exit'
            )
            run = f"sh -c {run}"
        tasks = " ".join(str(t) for t in range(job.n_tasks))
        return "\n".join(
            [
                f"cd -- {shlex.quote(job.job_dir)} || exit 1",  # before the prelude: nothing runs where it started
                *job.prelude,
                *([f"export {INPUTS_WAIT_ENV}=1"] if job.after else []),
                limit,
                f"printf '%s\\n' {tasks} | xargs -n 1 -P \"$P\" {run}",
                "",
            ]
        )

    def dependency_options(self, job: ScriptJob) -> list[str] | None:
        return []  # no queue to hold the job: it starts at once, and its runner waits for its inputs (below)

    def submit_argv(self, script_path: str, job: ScriptJob) -> list[str]:
        detach = 'setsid nohup sh "$0" </dev/null >stdout 2>stderr & echo "$!:$1"'
        return ["sh", "-c", detach, script_path, job.job_id]

    def parse_submit(self, stdout: str) -> str:
        lines = stdout.strip().splitlines()
        if not lines or not re.fullmatch(r"[0-9]+:[A-Za-z0-9_.-]+", lines[-1]):
            raise ParseError(f"the detached start printed {stdout.strip()!r}, not PGID:JOBID")
        return lines[-1]

    def status_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["sh", "-c", _LIVE + "exit 0", "sh", *native_ids]

    def alive_argv(self, native_id: str) -> list[str]:
        return ["sh", "-c", _LIVE + '[ -n "$found" ]', "sh", native_id]

    def parse_status(self, stdout: str) -> list[TaskRecord]:
        return [
            TaskRecord(words[0], None, words[1]) for words in map(str.split, stdout.splitlines()) if len(words) == 2
        ]

    def lost_reason(self, native_id: str) -> str:
        return "the job's processes are gone and not every task wrote its exit file (killed, or the runner crashed)"

    def cancel_argv(self, native_id: str) -> list[str]:
        return ["sh", "-c", _CANCEL, "sh", native_id]

    def log_name(self, native_id: str, task: int, stream: str) -> str:
        return stream
