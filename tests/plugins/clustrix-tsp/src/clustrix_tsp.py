"""task-spooler (``tsp``, Debian package ``task-spooler``) as a clustrix batch scheduler.

The whole plugin is a :class:`clustrix.batch.Dialect`: the argv of tsp's commands, the
parser of its job list and its states. The batch engine of clustrix core does the rest
(staging, the environment, polling, fetch, cancel, logs). tsp has no arrays, so a map
runs as one job whose task runs every call; it cannot limit memory, and its time limit
is coreutils' ``timeout`` around the runner.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from clustrix.batch import Dialect, ScriptJob, TaskRecord
from clustrix.batch.engine import BatchScheduler
from clustrix.errors import ParseError
from clustrix.plugin.hookspecs import hookimpl
from clustrix.plugin.types import JobState

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig

#: ``timeout``'s exit code when the time limit killed the job.
TIMED_OUT = 124


class TspDialect(Dialect):
    name = "tsp"
    label = "task-spooler"
    default_max_array_size = 1  # no arrays: one job runs every call of a map
    commands = ("tsp", "timeout")
    commands_hint = "the task-spooler package (timeout with coreutils)"
    unsupported = frozenset({"memory", "gpus", "partition", "queue"})
    extras = {"calls_per_task": "accepted for portability; tsp runs a map as one task anyway"}
    states = {"QUEUED": JobState.PENDING, "RUNNING": JobState.RUNNING, "SKIPPED": JobState.CANCELLED}

    def command_environment(self, config: ClusterConfig) -> Mapping[str, str]:
        socket = config.get("tsp_socket")
        return {"TS_SOCKET": socket} if socket else {}

    def directives(self, job: ScriptJob) -> list[str]:
        return []  # tsp takes no options from the script

    def runner_prefix(self, job: ScriptJob) -> list[str]:
        seconds = job.resources.time
        return ["timeout", "-k", "10", f"{seconds}s"] if seconds else []

    def submit_argv(self, script_path: str, job: ScriptJob) -> list[str]:
        slots = str(job.resources.cores or 1)
        return ["tsp", "-N", slots, "-L", self.job_name(job), "sh", "-c", 'exec "$0" >stdout 2>stderr', script_path]

    def dependency_options(self, job: ScriptJob) -> list[str] | None:
        # -D: run only if that job ended well (one id; tsp runs jobs in order, so the newest input)
        return ["-D", max((d.native_id for d in job.after), key=int)]

    def parse_submit(self, stdout: str) -> str:
        text = stdout.strip()
        if not text.isdigit():
            raise ParseError(f"tsp printed {text!r}, not a job id")
        return text

    def status_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["tsp", "-l"]  # one listing for every job of the queue

    def parse_status(self, stdout: str) -> list[TaskRecord]:
        records = []
        for line in stdout.splitlines()[1:]:  # below the header line
            words = line.split()
            if len(words) < 3 or not words[0].isdigit():
                continue
            code = int(words[3]) if words[1] == "finished" and len(words) > 3 else None
            records.append(TaskRecord(words[0], None, words[1], exit_code=code))
        return records

    def to_job_state(self, record: TaskRecord) -> JobState:
        if record.state != "finished":
            return super().to_job_state(record)
        if record.exit_code == 0:
            return JobState.COMPLETED
        return JobState.TIMEOUT if record.exit_code == TIMED_OUT else JobState.FAILED

    def cancel_argv(self, native_id: str) -> list[str]:
        # -r takes a queued job out; a running one gets SIGTERM to its process group
        return ["sh", "-c", 'tsp -r "$0" 2>/dev/null || tsp -k "$0"', native_id]

    def log_name(self, native_id: str, task: int, stream: str) -> str:
        return stream


@hookimpl
def clustrix_config_keys() -> dict[str, Any]:
    return {"tsp_socket": None}  # TS_SOCKET of the queue to use; None: tsp's default


@hookimpl
def clustrix_register_schedulers(register: Callable[[str, object], None]) -> None:
    register("tsp", BatchScheduler(TspDialect()))
