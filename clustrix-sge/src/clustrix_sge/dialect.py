"""Grid Engine as a :class:`clustrix.batch.dialect.Dialect`: qsub, qstat, qacct, qdel, qmod, qconf (pure).

Son of Grid Engine, Sun/Oracle Grid Engine and Univa/Altair Grid Engine share these
commands. Every map is one array (``-t 1-N``, ``$SGE_TASK_ID`` 1-based), submitted with
``-terse`` and ``-w e`` (a request no queue can ever run is refused at once with Grid
Engine's own message). One poll round is one ``qstat -xml`` for all open jobs (plus
``qstat -j`` for jobs in an error state, in the same command); jobs that left ``qstat``
are read from ``qacct``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from clustrix.batch.dialect import Dialect, ScriptJob, SiteInfo, TaskRecord
from clustrix.config.resources import Resources
from clustrix.plugin.types import JobState
from clustrix_sge import parse, script
from clustrix_sge import states as sge_states

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig


class SGEDialect(Dialect):
    """``cluster_type="sge"``: each submit is one ``qsub -terse`` of a job array (1-based)."""

    name = "sge"
    label = "SGE"
    task_index_variable = "SGE_TASK_ID"
    first_task_index = 1
    #: Maps of up to this many tasks are not asked about the site; larger ones read ``max_aj_tasks``
    #: once per cluster (``qconf -sconf``; Grid Engine's default is 75000, sites often set less).
    default_max_array_size = 100
    sweep_releases_dependants = True  # qdel of pending tasks releases -hold_jid and -hold_jid_ad holds
    commands = ("qsub", "qstat", "qdel", "qacct", "qconf")
    commands_hint = "gridengine-client (a site install keeps them in $SGE_ROOT/bin/<arch>)"
    extras = script.EXTRA_KEYS
    #: Grid Engine has no GPU request of its own: sites define a complex (``-l gpu=1``): use ``sge_directives``.
    unsupported = frozenset({"gpus"})
    transient_errors = (
        "commlib error",
        "unable to contact qmaster",
        "can't unpack gdi request",
        "failed receiving gdi request",
        "timed out",
        "try again",
    )
    states = sge_states.NATIVE_STATES
    script_name = "job.sge"
    directive_prefix = "#$"

    def validate_extras(self, resources: Resources) -> None:
        script.validate_extras(resources)

    def directives(self, job: ScriptJob) -> list[str]:
        site = script.SiteOptions.from_config(job.config)
        return [f"{self.directive_prefix} {option}" for option in script.qsub_options(job, self.job_name(job), site)]

    def setup_lines(self, job: ScriptJob) -> list[str]:
        # with -notify, SIGUSR2 may come before the runner's handler is set: the shell must not die of it
        return ["trap '' USR2"] if script.requeueable(job.resources) else []

    def command_environment(self, config: ClusterConfig) -> dict[str, str]:
        """``SGE_ROOT``/``SGE_CELL`` for every command when the configuration sets them (``sge_root``, ``sge_cell``)."""
        env = {}
        for key, variable in (("sge_root", "SGE_ROOT"), ("sge_cell", "SGE_CELL")):
            value = config.get(key)
            if value:
                env[variable] = str(value)
        return env

    def submit_argv(self, script_path: str, job: ScriptJob) -> list[str]:
        return ["qsub", "-terse", script_path]

    def dependency_options(self, job: ScriptJob) -> list[str] | None:
        # -hold_jid for whole jobs, -hold_jid_ad task by task (same task range) where the packing lines up
        whole = [d.native_id for d in job.after if not d.elementwise]
        each = [d.native_id for d in job.after if d.elementwise]
        return [*(["-hold_jid", ",".join(whole)] if whole else []), *(["-hold_jid_ad", ",".join(each)] if each else [])]

    def parse_submit(self, stdout: str) -> str:
        return parse.parse_qsub_terse(stdout)

    def status_argv(self, native_ids: Sequence[str]) -> list[str]:
        return parse.status_argv(native_ids)

    def parse_status(self, stdout: str) -> list[TaskRecord]:
        return [
            TaskRecord(job.job_id, job.tasks, job.state, self._qstat_reason(job))
            for job in parse.parse_qstat_xml(stdout)
        ]

    @staticmethod
    def _qstat_reason(job: parse.QstatJob) -> str | None:
        if job.reason:
            return job.reason
        return sge_states.explain_letters(job.state)

    def history_argv(self, native_ids: Sequence[str]) -> list[str] | None:
        return parse.history_argv(native_ids)

    def parse_history(self, stdout: str) -> list[TaskRecord]:
        records = []
        for record in parse.parse_qacct(stdout):
            word, reason = sge_states.classify(record)
            tasks = None if record.task is None else (record.task,)
            records.append(TaskRecord(record.job_id, tasks, word, reason, record.exit_status))
        return records

    def cancel_argv(self, native_id: str) -> list[str]:
        return ["qdel", native_id]

    def sweep_argv(self, native_id: str) -> list[str] | None:
        return parse.sweep_argv(native_id)

    def requeue_argv(self) -> list[str] | None:
        # needs -r y (the requeue extra, on by default); the task is queued again and restarts
        return ["qmod", "-rj", "${JOB_ID}.${SGE_TASK_ID}"]

    def site_argv(self) -> list[str] | None:
        return parse.qconf_sconf_argv()

    def parse_site(self, stdout: str) -> SiteInfo:
        values = parse.parse_qconf(stdout)
        return SiteInfo(max_array_size=parse.max_aj_tasks(values, 75000), history=True)

    def to_job_state(self, record: TaskRecord) -> JobState:
        return sge_states.to_job_state(record.state)

    def never_runnable(self, record: TaskRecord) -> str | None:
        """A job in an error state (``Eqw``) never starts by itself: report it with the reason of ``qstat -j``."""
        if "E" not in record.state or record.state.upper() in sge_states.HISTORY_STATES:
            return None
        return f"{record.state} ({record.reason or 'error state; qstat -j gives no reason'})"

    def log_name(self, native_id: str, task: int, stream: str) -> str:
        return script.log_name(native_id, task, stream)
