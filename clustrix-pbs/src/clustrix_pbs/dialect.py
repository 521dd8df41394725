"""PBS Pro/OpenPBS and Torque as :class:`clustrix.batch.dialect.Dialect` s (pure: argv, script, parsers).

Both flavours share the ``#PBS`` script, ``qsub``/``qstat``/``qdel`` and the state
table; they differ in the resource syntax, the array option and variable, and what
``qstat`` can print (PBS Pro: ``qstat -x -f``, history in the same query; Torque:
``qstat -f`` text, where finished jobs show ``C`` with ``exit_status``).
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Sequence

from clustrix.batch.dialect import Dialect, ScriptJob, SiteInfo, TaskRecord
from clustrix.config.resources import Resources
from clustrix.plugin.types import JobState
from clustrix_pbs import directives, parse, states

#: ``qstat`` exit codes that only mean "some listed job is unknown" (PBSE_UNKJOBID 15001 and
#: PBSE_HISTJOBID 15139, modulo 256): the records of the other jobs are still on stdout.
UNKNOWN_JOB_EXIT_CODES = frozenset({153, 35})


class PBSDialect(Dialect):
    """What both flavours share; :class:`PBSProDialect` and :class:`TorqueDialect` set the rest."""

    name = "pbs"
    label = "PBS"
    flavour: parse.Flavour = parse.Flavour.PBSPRO
    first_task_index = 1
    #: PBS Pro refuses ``-J 1-1``: one task is a plain job.
    single_task_is_plain_job = True
    #: PBS Pro's ``max_array_size`` defaults to 10000, but sites lower it: maps larger than
    #: this ask the server (``qstat -Bf``) before packing.
    default_max_array_size = 1000
    commands = ("qsub", "qstat", "qdel")
    commands_hint = "OpenPBS (in /opt/pbs/bin) or Torque's client package"
    extras = directives.EXTRA_KEYS
    transient_errors = (
        "cannot connect to server",
        "connection refused",
        "temporarily unavailable",
        "try again",
        "timed out",
    )
    states = {**states.NATIVE_STATES, **dict.fromkeys(states.FINAL_STATES, JobState.COMPLETED)}
    script_name = "job.pbs"
    directive_prefix = "#PBS"
    #: qdel, qrerun, preemption and the walltime all send SIGTERM, then SIGKILL after the queue's
    #: kill_delay; a job cannot requeue itself (qrerun needs operator rights), PBS reruns it.
    checkpoint_signal = "TERM"

    # ---- rendering ---------------------------------------------------------------
    def validate_extras(self, resources: Resources) -> None:
        directives.validate_resources(resources, self.flavour)

    def job_name(self, job: ScriptJob) -> str:
        name = str(job.resources.extra.get("job_name") or job.name or "clustrix")
        return directives.safe_job_name(name, self.flavour)

    def request(self, job: ScriptJob) -> directives.PBSRequest:
        return directives.PBSRequest(
            name=self.job_name(job),
            n_tasks=job.n_tasks,
            resources=job.resources,
            flavour=self.flavour,
            stdout=self.output_path(job, "stdout"),
            stderr=self.output_path(job, "stderr"),
            max_parallel=job.max_parallel,
        )

    def output_path(self, job: ScriptJob, stream: str) -> str:
        """Where ``qsub -o``/``-e`` put the job's streams (subclasses say how arrays are named)."""
        raise NotImplementedError

    def directives(self, job: ScriptJob) -> list[str]:
        return directives.directive_lines(self.request(job))

    def submit_argv(self, script_path: str, job: ScriptJob) -> list[str]:
        return directives.qsub_argv(self.request(job), script_path)

    def dependency_options(self, job: ScriptJob) -> list[str] | None:
        # whole jobs only (PBS holds no subjob for another's); an array is named "12[].server"
        arrays = [d.native_id for d in job.after if "[" in d.native_id]
        plain = [d.native_id for d in job.after if "[" not in d.native_id]
        if self.flavour is parse.Flavour.TORQUE:  # Torque: afterokarray for arrays
            kinds = [("afterok", plain), ("afterokarray", arrays)]
        else:  # OpenPBS / PBS Pro: afterok takes an array job id too
            kinds = [("afterok", plain + arrays)]
        return ["-W", "depend=" + ",".join(f"{kind}:{':'.join(ids)}" for kind, ids in kinds if ids)]

    def parse_submit(self, stdout: str) -> str:
        return parse.parse_qsub(stdout)

    # ---- status ------------------------------------------------------------------
    def parse_qstat(self, stdout: str) -> list[parse.QstatRecord]:
        """The flavour's ``qstat`` output as records (subclasses choose the format)."""
        raise NotImplementedError

    def parse_status(self, stdout: str) -> list[TaskRecord]:
        found = self.parse_qstat(stdout)
        return [
            task_record(record, self.flavour)
            for record in found
            if not (record.array_parent and found_subjobs(found, record))
        ]

    def status_failure_means_unknown(self, returncode: int, stderr: str) -> bool:
        errors = parse.classify_errors(stderr)
        return returncode in UNKNOWN_JOB_EXIT_CODES and all(
            e.kind in {parse.ErrorKind.UNKNOWN_JOB, parse.ErrorKind.FINISHED} for e in errors
        )

    def cancel_argv(self, native_id: str) -> list[str]:
        return ["qdel", native_id]

    def to_job_state(self, record: TaskRecord) -> JobState:
        word = self.native_state(record.state)
        if word in states.FINAL_STATES:
            return states.exit_status_verdict(record.exit_code, self.flavour).state
        return states.NATIVE_STATES.get(word, JobState.UNKNOWN)

    def never_runnable(self, record: TaskRecord) -> str | None:
        return states.never_run_reason(record.reason)

    # ---- logs ----------------------------------------------------------------------
    def log_name(self, native_id: str, task: int, stream: str) -> str:
        return f"pbs-{task}.{'out' if stream == 'stdout' else 'err'}"


def found_subjobs(records: Sequence[parse.QstatRecord], parent: parse.QstatRecord) -> bool:
    """Whether ``qstat -t`` listed subjobs of ``parent`` (then the parent's own line is redundant)."""
    return any(r.array_index is not None and r.sequence == parent.sequence for r in records)


def native_job_id(record: parse.QstatRecord) -> str:
    """The id ``qsub`` printed for the job this record belongs to: ``7[3].vm`` -> ``7[].vm``."""
    if record.array_index is None:
        return record.job_id
    head, _, tail = record.job_id.partition("]")
    return head.split("[", 1)[0] + "[]" + tail if tail or "[" in head else record.job_id


def task_record(record: parse.QstatRecord, flavour: parse.Flavour) -> TaskRecord:
    """A qstat record as the engine's :class:`TaskRecord`: finished ones carry PBS's own explanation."""
    reason = record.comment
    if record.state in states.FINAL_STATES:
        reason = states.exit_status_verdict(record.exit_status, flavour).reason
    return TaskRecord(
        job_id=native_job_id(record),
        tasks=None if record.array_index is None else (record.array_index,),
        state=record.state,
        reason=reason,
        exit_code=record.exit_status,
    )


#: How long a cancel waits for PBS to finish a deleted job (SIGTERM, then SIGKILL after the queue's
#: ``kill_delay``, 10 s by default), so its state is final when ``cancel`` returns.
CANCEL_WAIT_SECONDS = 15

#: ``qdel``, then ``qstat -x`` every 0.2 s until the job is F (PBS Pro keeps a deleted job Exiting
#: for about a second). Exit status: qdel's.
WAITING_QDEL = (
    'qdel "$1" || exit $?; i=0; while [ "$i" -lt "$2" ]; do '
    'qstat -x -f "$1" 2>/dev/null | grep -q "job_state = [FX]" && exit 0; sleep 0.2; i=$((i + 1)); done'
)


class PBSProDialect(PBSDialect):
    """PBS Pro / OpenPBS: ``select`` chunks, ``-J`` arrays, ``qstat -x -f -t`` (history in the same query)."""

    flavour = parse.Flavour.PBSPRO
    task_index_variable = "PBS_ARRAY_INDEX"

    def cancel_argv(self, native_id: str) -> list[str]:
        return ["sh", "-c", WAITING_QDEL, "qdel", native_id, str(CANCEL_WAIT_SECONDS * 5)]

    def output_path(self, job: ScriptJob, stream: str) -> str:
        # ^array_index^ is replaced by PBS Pro with each subjob's index; a plain job is task 1
        task = "^array_index^" if job.n_tasks > 1 else "1"
        return posixpath.join(job.job_dir, f"pbs-{task}.{'out' if stream == 'stdout' else 'err'}")

    def status_argv(self, native_ids: Sequence[str]) -> list[str]:
        # text, not -F json: OpenPBS 23.06 prints only the first of several jobs as JSON
        return ["qstat", "-x", "-f", "-t", *native_ids]

    def parse_qstat(self, stdout: str) -> list[parse.QstatRecord]:
        if stdout.lstrip().startswith("{"):
            return parse.parse_qstat_json(stdout)
        return parse.parse_qstat_full(stdout)

    def site_argv(self) -> list[str] | None:
        return ["qstat", "-Bf"]

    def parse_site(self, stdout: str) -> SiteInfo:
        attributes = parse.parse_server_attributes(stdout)
        return SiteInfo(max_array_size=parse.max_array_size(attributes), history=True)


class TorqueDialect(PBSDialect):
    """Torque: ``nodes=1:ppn`` and ``mem``, ``-t`` arrays, ``qstat -f`` text (``C`` with ``exit_status``).

    The runner reads ``PBS_ARRAYID``, or ``SLURM_ARRAY_TASK_ID`` under SLURM's Torque-style
    wrappers, which set only SLURM's variables; each task writes its own log files, since
    Torque and those wrappers name array output files differently.
    """

    flavour = parse.Flavour.TORQUE
    task_index_variable = "PBS_ARRAYID"
    default_max_array_size = 1000

    def output_path(self, job: ScriptJob, stream: str) -> str:
        return posixpath.join(job.job_dir, f"pbs-scheduler.{'out' if stream == 'stdout' else 'err'}")

    def setup_lines(self, job: ScriptJob) -> list[str]:
        task = '"${PBS_ARRAYID:-${SLURM_ARRAY_TASK_ID:-1}}"'
        out = posixpath.join(job.job_dir, "pbs-")
        return [
            f"export PBS_ARRAYID={task}",
            f'exec >>{shlex.quote(out)}"$PBS_ARRAYID.out" 2>>{shlex.quote(out)}"$PBS_ARRAYID.err"',
        ]

    def status_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["qstat", "-f", *native_ids]

    def parse_qstat(self, stdout: str) -> list[parse.QstatRecord]:
        text = stdout.strip()
        if text.startswith("<"):
            return parse.parse_qstat_xml(text)
        return parse.parse_qstat_full(stdout)

    def status_failure_means_unknown(self, returncode: int, stderr: str) -> bool:
        # Torque and its SLURM-based imitations exit 153 for an unknown id (the latter print nothing)
        return returncode == 153 or super().status_failure_means_unknown(returncode, stderr)


DIALECTS: dict[parse.Flavour, type[PBSDialect]] = {
    parse.Flavour.PBSPRO: PBSProDialect,
    parse.Flavour.TORQUE: TorqueDialect,
}
