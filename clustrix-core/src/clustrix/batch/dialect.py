"""The dialect contract: everything a batch scheduler adds to :mod:`clustrix.batch`, and nothing else.

A dialect is a pure, I/O-free object. It turns values into argv lists and script text, and
the text a scheduler command printed into records; the batch engine
(:class:`clustrix.batch.engine.BatchScheduler`) runs those argv through a transport,
stages the job directory, polls, fetches, cancels and cleans up for every dialect alike.
The split follows PSI/J's ``BatchSchedulerExecutor`` (``get_submit_command``,
``job_id_from_submit_output``, ``get_status_command``, ``parse_status_output``,
``get_cancel_command``) and dask-jobqueue (a subclass sets commands and directive
formats only).

A scheduler plugin subclasses :class:`Dialect`, sets its class attributes, overrides the
methods marked *required*, and registers ``BatchScheduler(MyDialect())`` under its name.
Everything here is tested with golden files and captured real output, no daemon needed.

Conventions that hold for every member:

- **argv, never shell text.** Every ``*_argv`` method returns a list of strings; the engine
  quotes each element (:func:`shlex.quote`) when it sends them through a shell, and prefixes
  them with :meth:`Dialect.command_environment`. An argv element may therefore hold any
  character, except in :meth:`Dialect.requeue_argv` (see there).
- **Native task numbers.** Task numbers that cross this boundary (in :class:`TaskRecord`,
  in :meth:`Dialect.log_name`) are the scheduler's own: 0-based for SLURM, 1-based for
  SGE and PBS. :attr:`Dialect.first_task_index` tells the engine the offset; the engine's
  own (0-based) task ``t`` is native task ``t + first_task_index``.
- **Native ids.** A *native id* is what :meth:`Dialect.parse_submit` returned for the
  whole job (the array's id), e.g. ``"123"`` (SLURM), ``"45"`` (SGE),
  ``"12[].server"`` (PBS array) or ``"12.server"`` (PBS plain job).
- **Errors.** Parsers raise :class:`clustrix.errors.ParseError` for text they do not understand; the engine
  turns that into a clear error naming the command. Validation raises ``ValueError``
  naming the parameter and the fix, before anything is submitted.

Names in this module are stable: they are extended, never renamed.
"""

from __future__ import annotations

import abc
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import attrs

from clustrix.config.resources import Resources, check_partition_queue
from clustrix.errors import ParseError
from clustrix.plugin.types import Dependency, JobState

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig

__all__ = [
    "FAILURE_PRIORITY",
    "Dependency",
    "Dialect",
    "ScriptJob",
    "SiteInfo",
    "TaskRecord",
    "expand_task_ids",
]


@attrs.frozen(kw_only=True)
class ScriptJob:
    """Everything the engine hands a dialect to render one job script and its submit argv.

    The engine has already staged ``job_dir`` (private, 0700) with the payload and the runner
    file, validated ``resources`` with :meth:`Dialect.validate`, and chosen the Python.
    """

    #: clustrix's job id (``YYYYmmdd-HHMMSS-<hex>``): shell- and path-safe.
    job_id: str
    #: The function's name, as the user wrote it (not sanitised: see :meth:`Dialect.job_name`).
    name: str
    #: Absolute path of the job directory on the machine the scheduler runs on.
    job_dir: str
    #: How many array tasks to submit (``1 <= n_tasks <= n_calls``); tasks are 0-based for the engine.
    n_tasks: int
    #: How many calls the job holds (``spec.size``).
    n_calls: int
    #: The validated resource request (``cores``, ``memory`` in bytes, ``time`` in seconds, ``extra``...).
    resources: Resources
    #: The Python that runs the runner file (``python_executable``, or the replicated venv's python).
    python: str
    #: Shell lines that prepare the job's shell, rendered once by :mod:`clustrix.remote.environment`
    #: (modules, conda, ``pre_execution_commands``, exports, PYTHONPATH overlay): used as is.
    prelude: tuple[str, ...] = ()
    #: Absolute path of the runner file shipped into the job directory.
    runner_path: str
    #: ``max_parallel_jobs``: at most this many tasks at once (an array throttle), or None.
    max_parallel: int | None = None
    #: The job's :class:`clustrix.config.settings.ClusterConfig`, for site settings a plugin declared through
    #: ``clustrix_config_keys`` (SGE's parallel environment name); None when rendered without one.
    config: ClusterConfig | None = attrs.field(default=None, eq=False, repr=False)
    #: Jobs of the same scheduler this one must wait for (futures passed as arguments); see
    #: :meth:`Dialect.dependency_options`. ``elementwise`` is set where task *t* needs only task *t*.
    after: tuple[Dependency, ...] = ()


@attrs.frozen
class TaskRecord:
    """One line of a status or history query: a job, or some tasks of an array, in one state.

    :param job_id: the native id of the job (the array's id, as :meth:`Dialect.parse_submit`
        returned it, so the engine can match records to jobs).
    :param tasks: the native task numbers this line describes; None for a plain (non-array)
        job, or for a whole array that the scheduler reports as one line (e.g. a pending
        array before any task started): the engine applies it to every task not otherwise reported.
    :param state: the native state word as printed (``"RUNNING"``, ``"CANCELLED by 0"``, ``"r"``,
        ``"Q"``); :meth:`Dialect.to_job_state` maps it.
    :param reason: the scheduler's reason or comment (pending reason, failure text), or None.
    :param exit_code: the task's exit code if the query knows it (history queries mostly), a
        signal reported as ``128 + signal``; None when unknown.
    """

    job_id: str
    tasks: tuple[int, ...] | None
    state: str
    reason: str | None = None
    exit_code: int | None = None


@attrs.frozen
class SiteInfo:
    """What the engine learns once per cluster (per connection) from :meth:`Dialect.site_argv`.

    :param max_array_size: tasks per array at most (SLURM ``MaxArraySize``, SGE ``max_aj_tasks``,
        PBS ``max_array_size``); the engine packs calls into at most this many tasks.
    :param history: True when :meth:`Dialect.history_argv` can answer on this cluster (SLURM:
        accounting is on); False skips the history query.
    """

    max_array_size: int
    history: bool = True


#: When the tasks of one array end differently, the one reported for the job (worst first).
FAILURE_PRIORITY: tuple[JobState, ...] = (
    JobState.OUT_OF_MEMORY,
    JobState.TIMEOUT,
    JobState.NODE_FAIL,
    JobState.FAILED,
    JobState.CANCELLED,
    JobState.UNKNOWN,
    JobState.COMPLETED,
)

_TASK_SPEC = re.compile(r"^\[?([0-9,\-:%]+)\]?$")


def expand_task_ids(spec: str) -> tuple[int, ...]:
    """Expand a task-id list as schedulers print it (pure helper for dialect parsers).

    ``"5"`` -> (5,); ``"[2-9%2]"`` or ``"2-9%2"`` -> 2..9; ``"1,3,5-7"`` -> (1, 3, 5, 6, 7);
    ``"1-9:2"`` (SGE/PBS step) -> (1, 3, 5, 7, 9).
    """
    match = _TASK_SPEC.match(spec.strip())
    if not match:
        raise ParseError(f"cannot read array task ids from {spec!r}")
    body = match.group(1).split("%", 1)[0]
    ids: list[int] = []
    for part in body.split(","):
        if not part:
            continue
        part, _, step_text = part.partition(":")
        step = int(step_text) if step_text else 1
        if "-" in part:
            low, _, high = part.partition("-")
            ids.extend(range(int(low), int(high) + 1, max(1, step)))
        else:
            ids.append(int(part))
    return tuple(ids)


class Dialect(abc.ABC):
    """One batch scheduler's vocabulary. Subclass it; every member is documented for authors.

    Class attributes describe the scheduler; methods marked *required* are abstract: a dialect
    that lacks one cannot be created (``TypeError`` naming the missing methods), so an
    incomplete dialect fails when its plugin registers it, not at its first submit. Methods
    with a default may be overridden.
    """

    # ------------------------------------------------------------------ identity
    #: The ``cluster_type`` this dialect serves (``"slurm"``); also in :class:`clustrix.plugin.types.JobHandle`.
    name: ClassVar[str] = ""
    #: How messages name the scheduler (``"SLURM"``, ``"SGE"``, ``"PBS"``).
    label: ClassVar[str] = ""

    # ------------------------------------------------------------------ arrays
    #: The environment variable holding the array task number inside a job
    #: (``SLURM_ARRAY_TASK_ID``, ``SGE_TASK_ID``, ``PBS_ARRAY_INDEX``, Torque ``PBS_ARRAYID``);
    #: None for a scheduler without arrays (then every job has one task).
    task_index_variable: ClassVar[str | None] = None
    #: The first native task number: 0 (SLURM) or 1 (SGE, PBS). The engine's task ``t`` is native
    #: task ``t + first_task_index``; when :attr:`task_index_variable` is unset in the job (a plain
    #: job), the runner runs task 0.
    first_task_index: ClassVar[int] = 0
    #: True when a one-task job is submitted as a plain job, not as an array of one (PBS: ``-J 1-1``
    #: is refused). Its status records then have ``tasks=None``, and there is nothing to sweep.
    single_task_is_plain_job: ClassVar[bool] = False
    #: Tasks per array when the scheduler is not asked (:meth:`site_argv` returns None), and the
    #: fallback when the site query fails. 1 means "no arrays": every job runs all its calls in one task.
    default_max_array_size: ClassVar[int] = 1000
    #: True when the jobs held for an array are released, not failed, by the :meth:`sweep_argv` of its
    #: pending tasks (SGE: ``-hold_jid``/``-hold_jid_ad`` count a deleted task as ended). Then an upstream
    #: whose calls are all done is swept like any array; else (SLURM ``afterok``/``aftercorr``, PBS
    #: ``afterok``: a cancelled task never "ends well") its pending tasks start and end before Python.
    sweep_releases_dependants: ClassVar[bool] = False

    #: The scheduler's commands clustrix runs (``("sbatch", "squeue", "scancel", "scontrol")``). The
    #: engine checks them with ``command -v`` on the target before the first submit of a connection,
    #: and ``clustrix doctor`` does too: a missing one is an error naming it, before anything is written.
    #: Empty: nothing is checked.
    commands: ClassVar[tuple[str, ...]] = ()
    #: Where the commands come from, for the error that names a missing one (``"the slurm-client
    #: package"``); "" says nothing about it.
    commands_hint: ClassVar[str] = ""

    # ------------------------------------------------------------------ resources
    #: ``resources.extra`` keys this scheduler understands, each with a one-line description for
    #: error messages and docs (``{"account": "--account: the account charged"}``). Any other key is
    #: refused by :meth:`validate` with the list of these.
    extras: ClassVar[Mapping[str, str]] = {}
    #: :class:`clustrix.config.resources.Resources` fields this scheduler cannot express or enforce
    #: (e.g. ``{"memory", "gpus"}``); asking for one is a ``ValueError`` naming it.
    unsupported: ClassVar[frozenset[str]] = frozenset()

    # ------------------------------------------------------------------ errors and timers
    #: Lower-case words in a failed submit's output that mean "try again" (controller busy or
    #: restarting), not "your request is wrong": the engine retries the submit with back-off.
    transient_errors: ClassVar[tuple[str, ...]] = (
        "temporarily unavailable",
        "timed out",
        "unable to contact",
        "connection refused",
        "try again",
    )
    #: Seconds a job may be unknown to both the status and the history query before it is
    #: reported FAILED ("lost"). Covers a controller restart and the gap before history has it.
    lost_after_seconds: ClassVar[float] = 60.0
    #: Seconds a job may stay ``PREEMPTED`` without being requeued before it counts as FAILED.
    preempted_final_after: ClassVar[float] = 60.0

    #: The exit code the job script itself writes into a task's exit-code file when its own time
    #: limit ended the task (coreutils ``timeout``: 124), for a scheduler that cannot say so (no
    #: history); such a task makes the job ``TIMEOUT``. None: exit-code files never mean that.
    timeout_exit_code: ClassVar[int | None] = None

    # ------------------------------------------------------------------ watch
    #: True: right after a submit the engine sends one more command, a *watch*, that waits on the
    #: target until the job's files are complete or :meth:`alive_argv` says the job ended (or a
    #: time limit passed, then it is sent again), and then reports like a poll round, outcomes
    #: inline, and wakes the poller. A one-call job under watch is not polled: a warm call costs its
    #: submit and its watch. For a scheduler whose status query is cheap and local (the ``ssh``
    #: backend's ``ps``); a few watches per connection at once, further jobs are polled.
    watch: ClassVar[bool] = False

    # ------------------------------------------------------------------ checkpoints
    #: The signal the scheduler itself sends a job before it stops it, when that is how a call's
    #: ``checkpoint()`` is reached (``"TERM"`` on PBS: ``qdel``, ``qrerun``, preemption and the
    #: walltime send SIGTERM, then SIGKILL after the queue's ``kill_delay``). The script exports it
    #: as ``CLUSTRIX_CHECKPOINT_SIGNAL``; on it the runner saves the checkpoint and ends as the signal
    #: would have, leaving rerun or deletion to the scheduler. None (SLURM, SGE): the runner
    #: checkpoints on SIGUSR2 and requeues itself with :meth:`requeue_argv`.
    checkpoint_signal: ClassVar[str | None] = None

    # ------------------------------------------------------------------ logs and states
    #: Native state word (upper-case, as :meth:`native_state` normalises it) to :class:`JobState`.
    #: ``JobState.final`` says which are final. An unknown word is ``JobState.UNKNOWN`` (not final).
    states: ClassVar[Mapping[str, JobState]] = {}
    #: The script's file name in the job directory.
    script_name: ClassVar[str] = "job.sh"
    #: The directive prefix of script lines (``"#SBATCH"``, ``"#$"``, ``"#PBS"``); "" for none.
    directive_prefix: ClassVar[str] = ""

    # ================================================================== validation
    def validate(self, resources: Resources) -> None:
        """Raise ``ValueError`` naming the parameter for a request this scheduler cannot take.

        The default refuses :attr:`unsupported` fields that are set, a ``partition`` and a ``queue``
        that disagree (one setting under two names, for every scheduler alike), and ``extra`` keys
        not in :attr:`extras`, then calls :meth:`validate_extras`. Called once per submit, before any I/O.
        """
        check_partition_queue(resources.partition, resources.queue)
        for field in sorted(self.unsupported):
            value = getattr(resources, field, None)
            if value not in (None, 0, ""):
                who = self.label or self.name
                raise ValueError(f"{field}={value!r}: {who} cannot limit {field}; leave it unset for this scheduler")
        unknown = sorted(set(resources.extra) - set(self.extras))
        if unknown:
            known = ", ".join(sorted(self.extras)) or "none"
            names = ", ".join(map(repr, unknown))
            raise ValueError(f"{self.label or self.name} does not understand {names}; its options are: {known}")
        calls = resources.extra.get("calls_per_task")
        if calls is not None and (isinstance(calls, bool) or not isinstance(calls, int) or calls < 1):
            raise ValueError(f"calls_per_task={calls!r} is not valid: use a whole number >= 1")
        self.validate_extras(resources)

    def validate_extras(self, resources: Resources) -> None:
        """Check the values of declared ``extra`` keys (types, single lines); default: nothing."""
        return None

    def calls_per_task(self, resources: Resources) -> int | None:
        """How many calls each array task owns (``calls_per_task`` extra), or None for one each.

        With claims on (always, for the engine), idle tasks steal unclaimed calls, so this is
        the packing's upper bound on parallelism, not a fixed split.
        """
        value = resources.extra.get("calls_per_task")
        return int(value) if value else None

    # ================================================================== rendering
    def job_name(self, job: ScriptJob) -> str:
        """A safe job name: the ``job_name`` extra or the function name, ``[A-Za-z0-9_.+-]``, at most 64 characters."""
        name = job.resources.extra.get("job_name") or job.name or "clustrix"
        return re.sub(r"[^A-Za-z0-9_.+-]", "_", str(name))[:64] or "clustrix"

    @abc.abstractmethod
    def directives(self, job: ScriptJob) -> list[str]:
        """*Required.* The directive lines of the script, each with its prefix (``#SBATCH --mem=100M``).

        Every value must be quoted for the scheduler's parser (:func:`shlex.quote` fits SLURM, SGE
        and PBS). The array directive covers native tasks ``first_task_index ..
        first_task_index + n_tasks - 1`` (throttled to ``max_parallel``), or is absent for a plain job.
        Output and error paths go into ``job.job_dir`` under :meth:`log_name`'s names.
        """
        ...

    def setup_lines(self, job: ScriptJob) -> list[str]:
        """Shell lines right after the directives, before the prelude (e.g. SLURM's ``trap '' USR2``)."""
        return []

    def runner_prefix(self, job: ScriptJob) -> list[str]:
        """argv put before the runner's (e.g. ``["timeout", "60"]`` where the scheduler cannot limit time)."""
        return []

    def render_script(self, job: ScriptJob) -> str:
        """The whole job script; the default is the same shape for every scheduler.

        ``#!/bin/bash``, :meth:`directives`, a comment, :meth:`setup_lines`, a ``cd`` into the private
        job directory (whatever directory the scheduler started the job in: the submit directory, the
        home directory, ``-wd``), :meth:`done_check_lines`, the prelude inside
        ``set -e``/``set +e``, the requeue export (when :meth:`requeue_argv` gives one and the
        ``requeue`` extra is not False), the :attr:`checkpoint_signal` export, then ``exec`` of the
        runner for this task: the runner is the batch shell, so the scheduler's signals reach Python.
        """
        lines = ["#!/bin/bash", *self.directives(job)]
        lines.append(f"# clustrix job {job.job_id}: {job.n_calls} call(s) in {job.n_tasks} array task(s)")
        lines.extend(self.setup_lines(job))
        lines.append(f"cd -- {shlex.quote(job.job_dir)} || exit 1")
        lines.extend(self.done_check_lines(job))
        if job.prelude:
            lines.extend(["set -e", *job.prelude, "set +e"])
        requeue = self.requeue_argv() if job.resources.extra.get("requeue", True) is not False else None
        if requeue:
            lines.append(requeue_export_line(requeue))
        if self.checkpoint_signal:
            lines.append(checkpoint_signal_line(self.checkpoint_signal))
        lines.append("exec " + self.runner_line(job))
        return "\n".join(lines) + "\n"

    def runner_line(self, job: ScriptJob) -> str:
        """The runner's command line for this task: the engine's 0-based task from the native one."""
        argv = [*self.runner_prefix(job), job.python, job.runner_path, job.job_dir]
        return shlex.join(argv) + f" --task {self.task_word(job)}"

    def task_word(self, job: ScriptJob) -> str:
        """A shell word that is this task's engine (0-based) number: ``0``, ``"${SLURM_ARRAY_TASK_ID:-0}"``."""
        if self.task_index_variable is None:
            return "0"
        first = int(self.first_task_index)
        task = f"${{{self.task_index_variable}:-{first}}}"
        return f'"{task}"' if first == 0 else f'"$(( {task} - {first} ))"'

    def done_check_lines(self, job: ScriptJob) -> list[str]:
        """Shell lines that end an array task before Python starts when every call of the job has its outcome.

        With dynamic packing the first tasks to start steal every call, and a dependant holds an
        upstream's leftover tasks in the queue (they cannot be swept: a cancelled task fails
        ``afterok``), so most tasks of a pipeline's array find nothing to do. Starting Python to
        learn that costs far more than the task itself (issue 21's benchmark): the shell counts the
        outcome files (shell builtins only), writes the task's exit-code file (0, as the runner would)
        and exits. Nothing for a one-task job.
        """
        if job.n_tasks <= 1:
            return []
        task, exit_file = self.task_word(job), "out/task-$_cx_task.exit"
        return [  # POSIX sh (a PBS job may run in the user's login shell): no arrays, no shopt
            f"_cx_task={task}; set -- out/*.pkl",
            f'if [ -e "$1" ] && [ "$#" -ge {int(job.n_calls)} ]; then  # every call is done: nothing to run',
            f'  (umask 077; echo 0 > "out/.tmp-task-$_cx_task" && mv -f -- "out/.tmp-task-$_cx_task" "{exit_file}")',
            "  exit 0",
            "fi",
        ]

    # ================================================================== commands and parsers
    def command_environment(self, config: ClusterConfig) -> Mapping[str, str]:
        """Variables set for every scheduler command (e.g. ``TS_SOCKET``, ``SGE_ROOT``); default none.

        ``config`` is the job's :class:`clustrix.config.settings.ClusterConfig` (always available: poll,
        cancel and fetch work from the handle and the registry's stored configuration).
        """
        return {}

    @abc.abstractmethod
    def submit_argv(self, script_path: str, job: ScriptJob) -> list[str]:
        """*Required.* The argv that submits ``script_path`` (``["sbatch", "--parsable", path]``).

        It runs with the job directory as working directory. Options that must be on the command
        line (Torque's ``-o``/``-e``) go here; the rest belongs in :meth:`directives`.
        """
        ...

    def dependency_options(self, job: ScriptJob) -> list[str] | None:
        """*Optional.* Submit options that hold ``job`` until every job of ``job.after`` has ended well.

        They are put right after the submit command's name (``sbatch --dependency=afterok:12
        --parsable job.sh``). Each :class:`Dependency` gives the upstream's native id, its task
        count, and ``elementwise`` when task *t* of ``job`` needs only task *t* of the upstream
        (SLURM ``aftercorr``, SGE ``-hold_jid_ad``); a scheduler that cannot hold tasks one by one
        holds the whole job. If the upstream can never end well, the scheduler should drop
        ``job`` (SLURM ``--kill-on-invalid-dep=yes``), so nothing waits for ever.

        The default, None, means "this scheduler has no dependencies": the client then waits for
        the inputs and submits the job itself when they are ready (client-side chaining), so the
        submitting process must stay alive.
        """
        return None

    @abc.abstractmethod
    def parse_submit(self, stdout: str) -> str:
        """*Required.* The native id from the submit command's standard output; :class:`ParseError` if none."""
        ...

    @abc.abstractmethod
    def status_argv(self, native_ids: Sequence[str]) -> list[str]:
        """*Required.* One status query for every listed job, finished ones included where possible."""
        ...

    @abc.abstractmethod
    def parse_status(self, stdout: str) -> list[TaskRecord]:
        """*Required.* The records in the status query's output (a job may have several lines)."""
        ...

    def status_failure_means_unknown(self, returncode: int, stderr: str) -> bool:
        """True when a failed status query only means "some of these jobs are not known any more".

        (``squeue``: "Invalid job id specified"; PBS ``qstat``: exit 153.) The engine then still
        parses what the query printed (PBS lists the jobs it knows) and treats the others as
        unreported, asking :meth:`history_argv`. Any other failure is an error of the poll round.
        Default: False.
        """
        return False

    def history_argv(self, native_ids: Sequence[str]) -> list[str] | None:
        """One query for jobs that left the status query (``sacct``, ``qacct``, ``qstat -x``); None: none.

        Asked only for jobs the status query did not report, and only when
        :attr:`SiteInfo.history` is true. Default: None.
        """
        return None

    def parse_history(self, stdout: str) -> list[TaskRecord]:
        """The records in the history query's output, with ``exit_code`` where known. Default: none."""
        return []

    def history_failure_means_unknown(self, returncode: int, stderr: str) -> bool:
        """True when a failed history query only means "these jobs are not in the history (yet)".

        (``qacct -j``: "job id N not found".) Default: False (the failure is an error of the round).
        """
        return False

    def alive_argv(self, native_id: str) -> list[str] | None:
        """For a :attr:`watch`: an argv that exits 0 while the job may still run, else not 0.

        The watch asks it every 20 looks at the files (about once a second). Default: None (the
        watch waits for the files or its time limit only).
        """
        return None

    def lost_reason(self, native_id: str) -> str:
        """Why a job that neither the status nor the history query reports (for ``lost_after_seconds``) FAILED."""
        return (
            f"{self.label or self.name} no longer knows job {native_id} "
            "(neither the status nor the history query reports it)"
        )

    @abc.abstractmethod
    def cancel_argv(self, native_id: str) -> list[str]:
        """*Required.* The argv that cancels the whole job, pending or running (``["scancel", id]``)."""
        ...

    def sweep_argv(self, native_id: str) -> list[str] | None:
        """Cancel only the array's still *pending* tasks (every call is done; they would find no work).

        (``scancel --state=PENDING id``.) None: the engine leaves them to start and exit at once.
        """
        return None

    def release_argv(self, native_id: str) -> list[str] | None:
        """*Optional.* Drop every dependency of the held job ``native_id`` (``scontrol update JobId=N Dependency=``).

        The engine runs it for the dependants of an upstream whose calls all ended well, right
        before it sweeps the upstream's pending tasks, where a cancelled task would fail their
        dependency (see :attr:`sweep_releases_dependants`). None (the default): such an upstream's
        pending tasks stay queued and end before Python.
        """
        return None

    def unwaited_check(self, native_id: str, command: Callable[[Sequence[str]], str]) -> str | None:
        """*Optional.* A shell condition, true when the scheduler says no queued job waits for ``native_id``.

        (SLURM: no pending job's ``squeue %E`` names it.) The engine sweeps an upstream's pending
        tasks only when it holds: a dependant this process does not know of (submitted by another
        process, or before this one attached the upstream) must not have its inputs' tasks
        cancelled. It must be false when the scheduler cannot tell. ``command`` turns an argv into
        the shell line that runs it on the target. None (the default): no check.
        """
        return None

    def requeue_argv(self) -> list[str] | None:
        """The argv a task runs to requeue itself after a checkpoint (SIGUSR2), or None: no requeue.

        Unlike other argv, elements are placed inside double quotes in the job script, so they
        may reference the job's environment (``"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"``);
        they must match ``[A-Za-z0-9_./:=@%+${}-]*`` (checked by the engine).
        """
        return None

    def site_argv(self) -> list[str] | None:
        """The once-per-cluster query for :class:`SiteInfo` (``scontrol show config``); None: not asked."""
        return None

    def parse_site(self, stdout: str) -> SiteInfo:
        """:class:`SiteInfo` from :meth:`site_argv`'s output; default: :attr:`default_max_array_size`, history on."""
        return SiteInfo(max_array_size=self.default_max_array_size, history=True)

    # ================================================================== states
    def native_state(self, text: str) -> str:
        """The bare upper-case state word: ``"CANCELLED by 0"`` -> ``CANCELLED``, ``"RUNNING+"`` -> ``RUNNING``."""
        word = text.strip().split(" ", 1)[0] if text.strip() else ""
        return word.rstrip("+*").upper()

    def to_job_state(self, record: TaskRecord) -> JobState:
        """Map a record to a :class:`JobState` through :attr:`states`; unknown words are UNKNOWN.

        Override to use more than the state word (PBS: exit status ``271`` means cancelled).
        """
        return self.states.get(self.native_state(record.state), JobState.UNKNOWN)

    def never_runnable(self, record: TaskRecord) -> str | None:
        """If this pending record can never start as submitted, the reason in words; else None.

        The engine then reports the job FAILED with that reason and cancels it (fail fast).
        Default: None (never).
        """
        return None

    def explain_reason(self, reason: str) -> str:
        """The scheduler's reason, followed by what it means where the dialect knows; default: as is."""
        return reason

    # ================================================================== logs
    @abc.abstractmethod
    def log_name(self, native_id: str, task: int, stream: str) -> str:
        """*Required.* The file name (in the job directory) of ``stream`` of native task ``task``.

        ``stream`` is ``"stdout"`` or ``"stderr"``.

        Names must be made of ``[A-Za-z0-9_.+%:-]`` (the engine lists them in one shell command).
        """
        ...


_REQUEUE_SAFE = re.compile(r"^[A-Za-z0-9_./:=@%+${}-]*$")


def requeue_export_line(argv: Sequence[str]) -> str:
    """``export CLUSTRIX_REQUEUE_ARGV=...``: the argv as JSON, with ``${VAR}`` expanded by the job's shell."""
    from clustrix.remote.runner import REQUEUE_ENV

    for item in argv:
        if not _REQUEUE_SAFE.match(item):
            raise ValueError(f"requeue argv item {item!r} may only hold [A-Za-z0-9_./:=@%+${{}}-]")
    body = ", ".join(f'\\"{item}\\"' for item in argv)
    return f'export {REQUEUE_ENV}="[{body}]"'


def checkpoint_signal_line(name: str) -> str:
    """``export CLUSTRIX_CHECKPOINT_SIGNAL=TERM``: the signal the runner checkpoints on."""
    from clustrix.remote.runner import SIGNAL_ENV

    if not re.fullmatch(r"[A-Z][A-Z0-9]*", name):
        raise ValueError(f"checkpoint_signal {name!r} must be a signal name such as TERM or USR2")
    return f"export {SIGNAL_ENV}={name}"
