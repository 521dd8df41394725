"""SLURM as a :class:`clustrix.batch.dialect.Dialect`: sbatch, squeue, sacct, scancel, scontrol (pure)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence

from clustrix.batch.dialect import Dialect, ScriptJob, SiteInfo, TaskRecord
from clustrix.config.resources import Resources
from clustrix.plugin.types import JobState
from clustrix_slurm import parse, script
from clustrix_slurm import states as slurm_states


class SlurmDialect(Dialect):
    """``cluster_type="slurm"``: each submit is one ``sbatch --parsable`` of a job array (0-based)."""

    name = "slurm"
    label = "SLURM"
    task_index_variable = "SLURM_ARRAY_TASK_ID"
    first_task_index = 0
    #: SLURM's default ``MaxArraySize`` (task ids 0..1000); larger maps ask ``scontrol show config``.
    default_max_array_size = 1001
    commands = ("sbatch", "squeue", "scancel", "scontrol")
    commands_hint = "the slurm-client package (every login node has them)"
    extras = script.EXTRA_KEYS
    transient_errors = (
        "temporarily unavailable",
        "socket timed out",
        "unable to contact",
        "connection refused",
        "try again",
    )
    states = slurm_states.NATIVE_STATES
    script_name = "job.sbatch"
    directive_prefix = "#SBATCH"

    def validate_extras(self, resources: Resources) -> None:
        script.validate_extras(resources)

    def directives(self, job: ScriptJob) -> list[str]:
        return [f"{self.directive_prefix} {option}" for option in script.sbatch_options(job, self.job_name(job))]

    def setup_lines(self, job: ScriptJob) -> list[str]:
        # an early SIGUSR2 (--signal=B:USR2@delay) must not kill the shell before the runner's handler is set
        return ["trap '' USR2"] if script.signal_delay(job.resources) else []

    def submit_argv(self, script_path: str, job: ScriptJob) -> list[str]:
        return ["sbatch", "--parsable", script_path]

    def dependency_options(self, job: ScriptJob) -> list[str] | None:
        # afterok for whole jobs, aftercorr task by task where the packing lines up; "," is AND
        whole = [d.native_id for d in job.after if not d.elementwise]
        each = [d.native_id for d in job.after if d.elementwise]
        kinds = [f"{kind}:{':'.join(ids)}" for kind, ids in (("afterok", whole), ("aftercorr", each)) if ids]
        return [f"--dependency={','.join(kinds)}", "--kill-on-invalid-dep=yes"]

    def parse_submit(self, stdout: str) -> str:
        return parse.parse_sbatch_parsable(stdout)

    def status_argv(self, native_ids: Sequence[str]) -> list[str]:
        return parse.squeue_argv(native_ids)

    def parse_status(self, stdout: str) -> list[TaskRecord]:
        return parse.parse_squeue(stdout)

    def status_failure_means_unknown(self, returncode: int, stderr: str) -> bool:
        return "invalid job id" in stderr.lower()  # every job listed has left slurmctld's memory

    def history_argv(self, native_ids: Sequence[str]) -> list[str] | None:
        return parse.sacct_argv(native_ids)

    def parse_history(self, stdout: str) -> list[TaskRecord]:
        return parse.parse_sacct(stdout)

    def history_failure_means_unknown(self, returncode: int, stderr: str) -> bool:
        return "accounting storage is disabled" in stderr.lower()

    def cancel_argv(self, native_id: str) -> list[str]:
        return ["scancel", native_id]

    def sweep_argv(self, native_id: str) -> list[str] | None:
        return ["scancel", "--state=PENDING", native_id]

    def release_argv(self, native_id: str) -> list[str] | None:
        return ["scontrol", "update", f"JobId={native_id}", "Dependency="]

    def unwaited_check(self, native_id: str, command: Callable[[Sequence[str]], str]) -> str | None:
        # %E: the dependencies a pending job still waits for ("afterok:123_*(unfulfilled),aftercorr:124_*(...)")
        listing = command(["squeue", "--noheader", "--states=PENDING", "--format=%E"])
        names = shlex.quote(f"(^|[:,]){re.escape(native_id)}(_[^:,(]*)?[(]")
        return f"{{ _cx_waits=$({listing}) && ! printf '%s\\n' \"$_cx_waits\" | grep -Eq {names}; }}"

    def requeue_argv(self) -> list[str] | None:
        return ["scontrol", "requeue", "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"]

    def site_argv(self) -> list[str] | None:
        return ["scontrol", "show", "config"]

    def parse_site(self, stdout: str) -> SiteInfo:
        values = parse.parse_scontrol_config(stdout)
        return SiteInfo(max_array_size=parse.max_array_size(values), history=parse.accounting_enabled(values))

    def never_runnable(self, record: TaskRecord) -> str | None:
        if not slurm_states.never_runnable(record.reason):
            return None
        words = record.state.strip()
        if record.reason:
            words += f" ({slurm_states.explain_reason(record.reason)})"
        return words

    def explain_reason(self, reason: str) -> str:
        return slurm_states.explain_reason(reason)

    def log_name(self, native_id: str, task: int, stream: str) -> str:
        return script.log_name(native_id, task, stream)


def to_job_state(text: str) -> JobState:
    """Map a state as ``squeue``/``sacct`` print it (``"CANCELLED by 0"``); an unknown word is UNKNOWN."""
    return SlurmDialect().to_job_state(TaskRecord("", None, text))
