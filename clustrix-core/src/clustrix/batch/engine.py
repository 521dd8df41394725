"""The batch engine: the routed scheduler hooks, implemented once for every :class:`~clustrix.batch.dialect.Dialect`.

Register ``BatchScheduler(MyDialect())`` under the dialect's name and the scheduler works on
the login node itself (local transport) and from a laptop (SSH transport), with each
operation one remote command:

- **submit**: the environment check (once per process and target, :mod:`clustrix.remote.environment`),
  then one command that creates the private job directory, stores the payload (stdin), the
  runner file and the job script, and calls the scheduler's submit command. The site query
  (``MaxArraySize``) runs only for maps larger than the dialect's default array size.
- **poll**: one command per host and round for all its open jobs: the status query, then
  every job's exit-code files, outcome count and failure markers; finished jobs' outcomes come
  back inline. Each status counts the job's calls done, failed, running and pending
  (:func:`~clustrix.batch.status.call_counts`: outcomes and claims from the same command,
  running tasks from the status query), for the progress bar and ``clustrix jobs``. Jobs
  the status query no longer knows are asked of the history query (one more command, only
  then). Lost and preempted timers, never-runnable detection (the job is reported FAILED and
  cancelled), and sweeping the pending tasks of an array whose calls are all done, are all here.
- **fetch**: the outcomes the poll brought back, else one command.
- **cancel**, **logs**: one command each.

Poll, cancel, fetch and logs work from the :class:`~clustrix.plugin.types.JobHandle` and the stored
configuration alone, so the CLI and :meth:`clustrix.Job.attach` work in another process.
"""

from __future__ import annotations

import collections
import math
import posixpath
import secrets
import shlex
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from clustrix.batch import shell
from clustrix.batch.dialect import Dialect, ScriptJob, SiteInfo, TaskRecord
from clustrix.batch.reports import PollReport, QueryOutput, parse_report
from clustrix.batch.status import (
    JobFiles,
    as_cancelled,
    call_counts,
    job_status,
    running_tasks,
    status_from_files,
)
from clustrix.errors import ClustrixError, JobError, ParseError
from clustrix.log import get_logger
from clustrix.plugin import dryrun
from clustrix.plugin.hookspecs import hookimpl
from clustrix.plugin.manager import transport_for
from clustrix.plugin.transport import Transport
from clustrix.plugin.types import JobHandle, JobSpec, JobState, JobStatus, Outcome
from clustrix.remote import jobdir, runner
from clustrix.remote import scripts as remote_script
from clustrix.remote.environment.activation import VARIABLES_FILE, RemoteEnvironment, activation_from_config
from clustrix.remote.environment.capture import capture_environment
from clustrix.remote.environment.prepare import planned_remote_environment, prepare_remote_environment
from clustrix.remote.localcode.shipping import ShippedCode, planned, ship
from clustrix.remote.report import run_script, unsafe_outcomes

log = get_logger("clustrix.batch")

#: The runner module, shipped as a file: ``python -m clustrix.remote.runner`` would import the whole
#: clustrix package first (about 0.3 s of CPU per array task); the file needs only cloudpickle.
RUNNER_NAME = "clustrix_runner.py"
#: What the job's Python must import (the runner file needs only cloudpickle).
JOB_NEEDS = ("cloudpickle",)
#: How many task logs :meth:`BatchScheduler.clustrix_read_logs` returns at most (the failed ones first).
MAX_LOGS = 5
#: Final jobs whose inlined outcomes this process holds for fetch (oldest dropped first).
MAX_REMEMBERED = 1024
#: Submit attempts when the scheduler answers with one of the dialect's transient errors.
SUBMIT_ATTEMPTS = 4
COMMAND_TIMEOUT = 120.0


class SubmitRejectedError(JobError, ValueError):
    """The scheduler refused the job at submission; the message is the scheduler's own."""


class StagingError(ClustrixError):
    """The job directory could not be created or written (not private, full, read-only); nothing was submitted."""


class SchedulerCommandError(ClustrixError):
    """A scheduler command failed in a way that is not about one job (the message carries its stderr)."""


class SchedulerCommandNotFoundError(SchedulerCommandError):
    """A scheduler command is not on the target's PATH (a laptop, a node without the client): nothing was submitted."""


def tasks_for(size: int, calls_per_task: int | None, max_array_size: int) -> int:
    """How many array tasks a job of ``size`` calls gets: ``calls_per_task`` calls each, at most ``max_array_size``.

    With dynamic packing this is the most parallelism the job can have: tasks that start
    early steal the calls of tasks still pending, so tiny calls finish in the first few tasks.
    """
    wanted = math.ceil(size / calls_per_task) if calls_per_task else size
    return max(1, min(wanted, size, max_array_size))


@attrs.frozen
class _Final:
    """A job found final by a poll: its status and, when inlined, its outcome files."""

    status: JobStatus
    files: dict[int, bytes] | None
    #: (reason, entry) when the job's files failed the privacy check
    unsafe: tuple[str, str] | None = None


def n_tasks_of(handle: JobHandle) -> int:
    return int(handle.data.get("tasks", handle.size))


class BatchScheduler:
    """The scheduler hooks for one batch dialect; register an instance under ``dialect.name``."""

    needs_environment = True  # the declared capabilities of clustrix.plugin.types.Scheduler
    persistent = True

    def __init__(self, dialect: Dialect, transport_factory: Callable[[Any], Transport] = transport_for) -> None:
        self.dialect = dialect
        self.name = dialect.name
        #: What a job's Python must import (``clustrix doctor`` checks it): the runner file ships with the job.
        self.python_needs: tuple[str, ...] = JOB_NEEDS
        self.resource_keys = dialect.extras  # the @cluster keywords core accepts at decoration
        self._transport_factory = transport_factory
        self._lock = threading.Lock()
        self._sites: dict[tuple[Any, ...], SiteInfo] = {}
        #: Connections whose scheduler commands were found (:meth:`check_commands_before_submit`).
        self._commands_found: set[tuple[Any, ...]] = set()
        self._unknown_since: dict[str, float] = {}
        self._preempted_since: dict[str, float] = {}
        self._never_runnable: dict[str, JobStatus] = {}
        self._swept: set[str] = set()
        self._final: collections.OrderedDict[str, _Final] = collections.OrderedDict()

    def __repr__(self) -> str:
        return f"BatchScheduler({type(self.dialect).__name__})"

    # ---- helpers ------------------------------------------------------------
    def transport(self, config: Any) -> Transport:
        """The transport for ``config``: owned by the transport plugin's pool, never cached here."""
        return self._transport_factory(config)

    def _env(self, config: Any) -> Mapping[str, str]:
        return self.dialect.command_environment(config)

    def _command(self, argv: Sequence[str], config: Any) -> str:
        return shell.command_line(argv, self._env(config))

    def site(self, config: Any, transport: Transport) -> SiteInfo:
        """:class:`SiteInfo`, asked once per cluster (and only if the dialect has a site query)."""
        key = (transport.host, *_connection_key(config))
        with self._lock:
            info = self._sites.get(key)
        if info is not None:
            return info
        argv = self.dialect.site_argv()
        info = SiteInfo(max_array_size=self.dialect.default_max_array_size)
        if argv is not None:
            output = self._query(transport, self._command(argv, config))
            if output.returncode == 0:
                info = self.dialect.parse_site(output.stdout)
        with self._lock:
            self._sites[key] = info
        return info

    def check_commands(self, config: Any, transport: Transport, *, submitting: bool = False) -> tuple[str, ...]:
        """Check the dialect's :attr:`~Dialect.commands` with ``command -v`` on the target; return their paths.

        Raises :class:`SchedulerCommandNotFoundError` naming the missing ones and the fix. ``clustrix
        doctor`` asks every time; a submit once per connection (:meth:`check_commands_before_submit`).
        """
        names = self.dialect.commands
        if not names:
            return ()
        probe = "for c in " + " ".join(map(shlex.quote, names)) + '; do command -v "$c"; done'
        script = "\n".join([*shell.render_command_check(names), probe, ""])
        code, out, err = run_script(transport, script, timeout=COMMAND_TIMEOUT)
        errors = err.decode(errors="replace")
        missing = shell.missing_commands(code, errors)
        if missing:
            raise self.commands_not_found(missing, transport.host, submitting=submitting)
        if code != 0:
            raise SchedulerCommandError(
                f"checking {', '.join(names)} on {transport.host} failed (exit {code}): {errors}"
            )
        return tuple(line for line in out.decode(errors="replace").splitlines() if line)

    def check_commands_before_submit(self, config: Any, transport: Transport) -> None:
        """:meth:`check_commands` once per connection (a success is remembered), saying nothing was submitted."""
        key = (transport.host, *_connection_key(config))
        with self._lock:
            if key in self._commands_found:
                return
        self.check_commands(config, transport, submitting=True)
        with self._lock:
            self._commands_found.add(key)

    def commands_not_found(self, missing: Sequence[str], host: str, *, submitting: bool = False) -> ClustrixError:
        """The error naming the scheduler commands missing on ``host``, where they come from, and the fix."""
        d = self.dialect
        what = " and ".join(", ".join(missing).rsplit(", ", 1))
        them, they = ("it", "it comes") if len(missing) == 1 else ("them", "they come")
        source = f"; {they} with {d.commands_hint}" if d.commands_hint else ""
        done = ". Nothing was submitted." if submitting else ""
        return SchedulerCommandNotFoundError(
            f"{what}: not found on {host} (not on the PATH there); cluster_type={d.name!r} runs {them} to submit "
            f"and watch jobs. Run clustrix where {d.label or d.name}'s commands are (set cluster_host to a login "
            f"node of the cluster), or add their directory to PATH{source}{done}"
        )

    def probe(self, config: Any, transport: Transport) -> str:
        """``clustrix doctor``'s check of the scheduler: its commands (:meth:`check_commands`) and its site query.

        Returns what was found, in words; raises naming the missing command or the failed query.
        """
        found = self.check_commands(config, transport)
        text = f"{', '.join(found)} on {transport.host}" if found else f"nothing to check on {transport.host}"
        argv = self.dialect.site_argv()
        if argv is None:
            return text
        output = self._query(transport, self._command(argv, config))
        if output.returncode != 0:
            raise SchedulerCommandError(
                f"{shlex.join(argv)} on {transport.host} failed (exit {output.returncode}): "
                f"{(output.stderr or output.stdout).strip()}"
            )
        info = self.dialect.parse_site(output.stdout)
        return f"{text}; {shlex.join(argv)}: arrays up to {info.max_array_size} tasks"

    def _query(self, transport: Transport, command: str) -> QueryOutput:
        marker = secrets.token_hex(6)
        code, out, err = run_script(transport, shell.render_query(command, marker=marker), timeout=COMMAND_TIMEOUT)
        report = parse_report(out, marker)
        if report.query is None:
            raise SchedulerCommandError(
                f"running {command!r} on {transport.host} failed (exit {code}): {err.decode(errors='replace').strip()}"
            )
        return report.query

    # ---- submit -------------------------------------------------------------
    @hookimpl
    def clustrix_submit(self, spec: JobSpec, wake: Callable[[], None]) -> JobHandle:
        d = self.dialect
        config = spec.config if spec.config is not None else _EMPTY_CONFIG
        d.validate(spec.resources)
        activation_from_config(config)  # bad variable names or multi-line commands: refused here
        transport = self.transport(config)
        self.check_commands_before_submit(config, transport)  # before anything is built, shipped or staged
        snapshot = spec.environment or capture_environment(config.get("replicate_distributions"))
        # before anything is written remotely: a Python mismatch or a failed build stops here
        prepared = prepare_remote_environment(transport, config, snapshot, needs=self.python_needs)
        wanted = tasks_for(spec.size, d.calls_per_task(spec.resources), spec.size)
        max_array = d.default_max_array_size
        if wanted > max_array and d.site_argv() is not None:
            max_array = self.site(config, transport).max_array_size
        n_tasks = tasks_for(spec.size, d.calls_per_task(spec.resources), max_array)
        tasks = jobdir.plan_tasks(spec.size, n_tasks)
        # the user's own modules: refused if they cannot travel, else shipped once per content hash
        payload, code = jobdir.encode_payload_and_code(spec, tasks, claim=True, needs=self.python_needs)
        shipped = ship(transport, config, code, python=prepared.python, prelude=prepared.check_prelude())
        base_dir = transport.expand(config.get("remote_work_dir") or "~/.clustrix")
        plan = plan_submission(d, spec, config, base_dir=base_dir, n_tasks=len(tasks), env=prepared, code=shipped)
        job, job_dir, script_path = plan.job, plan.job.job_dir, plan.script_path
        native_id = self._stage_and_submit(transport, job, payload, plan.command, prepared.variables_file())
        log.info(
            "clustrix.job_submitted",
            scheduler=self.name,
            job_id=spec.job_id,
            native_id=native_id,
            tasks=len(tasks),
            calls=spec.size,
        )
        return JobHandle(
            job_id=spec.job_id,
            scheduler=self.name,
            size=spec.size,
            native_id=native_id,
            host=transport.host,
            job_dir=job_dir,
            data={"tasks": len(tasks), "script": script_path},
        )

    @hookimpl
    def clustrix_dry_run(self, spec: JobSpec) -> dryrun.DryRun:
        """The script and submit command of ``spec``, by :func:`plan_submission` as a submit would; no I/O.

        Validation and pickling run as for a submit. Nothing connects: ``~`` is expanded here for a
        local scheduler and shown as :data:`clustrix.plugin.dryrun.REMOTE_HOME` for another host; the site's
        array limit is the one this process already asked, else the dialect's default.
        """
        d = self.dialect
        config = spec.config if spec.config is not None else _EMPTY_CONFIG
        d.validate(spec.resources)
        activation_from_config(config)
        paths = dryrun.remote_paths(config)
        snapshot = spec.environment or capture_environment(config.get("replicate_distributions"))
        prepared = planned_remote_environment(config, snapshot, paths.expand)
        notes = list(paths.notes)
        max_array = d.default_max_array_size
        if tasks_for(spec.size, d.calls_per_task(spec.resources), spec.size) > max_array and d.site_argv():
            with self._lock:
                known = [info for key, info in self._sites.items() if key[1:] == _connection_key(config)]
            if known:
                max_array = known[0].max_array_size
            else:
                notes.append(
                    f"array size limited to {max_array} tasks (the default): a real submit asks the site "
                    f"({shlex.join(d.site_argv() or [])}) and may use more"
                )
        tasks = jobdir.plan_tasks(spec.size, tasks_for(spec.size, d.calls_per_task(spec.resources), max_array))
        _payload, code = jobdir.encode_payload_and_code(spec, tasks, claim=True, needs=self.python_needs)
        base_dir = paths.expand(config.get("remote_work_dir") or "~/.clustrix")
        shipped = planned(base_dir, code)
        plan = plan_submission(d, spec, config, base_dir=base_dir, n_tasks=len(tasks), env=prepared, code=shipped)
        if not config.get("python_executable") and snapshot.get("distributions"):
            notes.append(f"{prepared.python} is the replicated venv: a real submit builds it first if it is missing")
        return dryrun.DryRun(
            scheduler=self.name,
            job_id=spec.job_id,
            calls=spec.size,
            tasks=len(tasks),
            script=d.render_script(plan.job),
            script_path=plan.script_path,
            commands=(f"cd {shlex.quote(plan.job.job_dir)}", plan.command),
            notes=(
                *notes,
                f"staged first, private (0700): {runner.PAYLOAD}, {RUNNER_NAME}"
                f"{', ' + VARIABLES_FILE if prepared.variables else ''} and {d.script_name} "
                f"in {plan.job.job_dir}",
                *dryrun.variables_notes(prepared.variables),
            ),
        )

    def _stage_and_submit(
        self, transport: Transport, job: ScriptJob, payload: bytes, submit: str, variables: bytes = b""
    ) -> str:
        """Stage the job directory and submit, in one remote command; ``variables`` is the job's variables file.

        The variables file (the values of ``environment_variables``) is stored 0600 next to the
        payload and sourced by the job script, so no value is in the script a scheduler spools.
        """
        d = self.dialect
        marker = secrets.token_hex(6)
        runner_file = _runner_source()
        job_script = d.render_script(job).encode()
        files = [
            shell.StagedFile(name=runner.PAYLOAD, size=len(payload)),
            shell.StagedFile(name=RUNNER_NAME, size=len(runner_file)),
            *([shell.StagedFile(name=VARIABLES_FILE, size=len(variables))] if variables else []),
            shell.StagedFile(name=d.script_name, size=len(job_script), mode=0o700),
        ]
        script = shell.render_submit(
            base_dir=posixpath.dirname(job.job_dir), job_dir=job.job_dir, files=files, submit=submit, marker=marker
        )
        data = payload + runner_file + variables + job_script
        code, out, err = run_script(transport, script, data, timeout=COMMAND_TIMEOUT)
        text, errors = out.decode(errors="replace"), err.decode(errors="replace").strip()
        staged = f"@{marker} staged\n"
        if staged not in text:
            unsafe = remote_script.unsafe_from_stderr(errors, transport.host)
            if unsafe is not None:
                raise unsafe
            raise StagingError(
                errors.removeprefix("clustrix: ")
                or f"staging job {job.job_id} on {transport.host} failed (exit {code}) without a message"
            )
        answer = text.split(staged, 1)[1]
        for attempt in range(1, SUBMIT_ATTEMPTS):
            if code == 0 or not any(word in errors.lower() for word in d.transient_errors):
                break
            time.sleep(0.5 * 2 ** (attempt - 1))
            retry = f"cd {shlex.quote(job.job_dir)} || exit 1\nexec {submit}\n"
            code, out, err = run_script(transport, retry, timeout=COMMAND_TIMEOUT)
            answer, errors = out.decode(errors="replace"), err.decode(errors="replace").strip()
        if code != 0:
            reason = errors or answer.strip() or f"the submit command exited {code}"
            _remove_refused_job_dir(transport, job)
            raise SubmitRejectedError(
                f"{d.label or d.name} refused the job: {reason}", reason=reason, state=JobState.FAILED
            )
        try:
            return d.parse_submit(answer)
        except ParseError as exc:
            raise SchedulerCommandError(f"{d.label or d.name} accepted job {job.job_id} but: {exc}") from exc

    # ---- poll ---------------------------------------------------------------
    @hookimpl
    def clustrix_poll(self, handles: Sequence[JobHandle], config: Any) -> Mapping[str, JobStatus]:
        statuses: dict[str, JobStatus] = {}
        open_handles: list[JobHandle] = []
        with self._lock:
            for handle in handles:
                known = self._final.get(handle.job_id)
                if known is not None:
                    statuses[handle.job_id] = known.status
                elif handle.job_id in self._never_runnable:  # we cancelled it: keep the first answer
                    statuses[handle.job_id] = self._never_runnable[handle.job_id]
                elif handle.job_dir:
                    open_handles.append(handle)
        if not open_handles:
            return statuses
        config = config if config is not None else _EMPTY_CONFIG
        transport = self.transport(config)
        report = self._poll_round(transport, open_handles, config)
        try:
            records: Mapping[str, list[TaskRecord]] | None = self._records(
                report.query, self.dialect.parse_status, self.dialect.status_failure_means_unknown
            )
        except SchedulerCommandError as exc:
            # the controller is restarting or busy: the files still tell which jobs are over
            log.warning("clustrix.status_query_failed", scheduler=self.name, error=str(exc))
            records = None
        now = time.monotonic()
        unresolved: list[JobHandle] = []
        for handle in open_handles:
            files = report.files.get(handle.job_id, JobFiles())
            if handle.job_id in report.swept:
                self._swept.add(handle.job_id)
            status = self._decide(handle, files, records or {})
            if status is None:
                unresolved.append(handle)
            else:
                statuses[handle.job_id] = status
        if unresolved and records is not None:
            statuses.update(self._from_history(transport, unresolved, report, config))
        for handle in open_handles:
            job_id = handle.job_id
            if job_id not in statuses and records is not None:
                since = self._unknown_since.setdefault(job_id, now)
                if now - since > self.dialect.lost_after_seconds:
                    statuses[job_id] = JobStatus(
                        state=JobState.FAILED,
                        reason=f"{self.dialect.label or self.name} no longer knows job {handle.native_id} "
                        "(neither the status nor the history query reports it)",
                    )
            if job_id in statuses:
                statuses[job_id] = self._settle_preempted(job_id, statuses[job_id], now)
                statuses[job_id] = self._with_counts(handle, statuses[job_id], report, records)
                if statuses[job_id].state.final:
                    self._unknown_since.pop(job_id, None)
                    self._remember(job_id, statuses[job_id], report)
        self._cancel_never_runnable(transport, open_handles, statuses, config)
        return statuses

    def _poll_round(self, transport: Transport, handles: Sequence[JobHandle], config: Any) -> PollReport:
        d = self.dialect
        jobs = []
        for handle in handles:
            n_tasks = n_tasks_of(handle)
            sweep = None
            if n_tasks > 1 and handle.native_id and handle.job_id not in self._swept:
                argv = d.sweep_argv(handle.native_id)
                sweep = None if argv is None else self._command(argv, config)
            jobs.append(
                shell.PollJob(
                    job_id=handle.job_id, job_dir=str(handle.job_dir), n_tasks=n_tasks, n_calls=handle.size, sweep=sweep
                )
            )
        native_ids = [h.native_id for h in handles if h.native_id]
        status = self._command(d.status_argv(native_ids), config) if native_ids else None
        marker = secrets.token_hex(6)
        code, out, err = run_script(
            transport, shell.render_poll(jobs, status=status, marker=marker), timeout=COMMAND_TIMEOUT
        )
        report = parse_report(out, marker, {h.job_id for h in handles})
        if code != 0 and not report.files:
            raise SchedulerCommandError(
                f"the poll command on {transport.host} failed (exit {code}): {err.decode(errors='replace').strip()}"
            )
        return report

    def _records(
        self,
        output: QueryOutput | None,
        parse: Callable[[str], list[TaskRecord]],
        means_unknown: Callable[[int, str], bool],
    ) -> dict[str, list[TaskRecord]]:
        if output is None:
            return {}
        if output.returncode != 0 and not means_unknown(output.returncode, output.stderr):
            raise SchedulerCommandError(
                f"{self.dialect.label or self.name}'s query failed (exit {output.returncode}): "
                f"{output.stderr.strip() or output.stdout.strip()}"
            )
        # a query that failed only because some listed jobs are unknown still prints the others (PBS qstat)
        grouped: dict[str, list[TaskRecord]] = {}
        for record in parse(output.stdout):
            grouped.setdefault(record.job_id, []).append(record)
        return grouped

    def _decide(self, handle: JobHandle, files: JobFiles, records: Mapping[str, list[TaskRecord]]) -> JobStatus | None:
        """Files first; then the records, with the exit codes read after the query (no race)."""
        n_tasks = n_tasks_of(handle)
        status = status_from_files(files, n_tasks, handle.size)
        if status is not None:
            return status
        found = records.get(handle.native_id or "", [])
        status = job_status(self.dialect, found, n_tasks, files.exits) if found else None
        return as_cancelled(status, files)

    def _from_history(
        self, transport: Transport, handles: Sequence[JobHandle], report: PollReport, config: Any
    ) -> dict[str, JobStatus]:
        d = self.dialect
        ids = [h.native_id for h in handles if h.native_id]
        argv = d.history_argv(ids) if ids else None
        if argv is None:
            return {}
        if d.site_argv() is not None and not self.site(config, transport).history:
            return {}
        output = self._query(transport, self._command(argv, config))
        records = self._records(output, d.parse_history, d.history_failure_means_unknown)
        statuses = {}
        for handle in handles:
            status = self._decide(handle, report.files.get(handle.job_id, JobFiles()), records)
            if status is not None:
                statuses[handle.job_id] = status
        return statuses

    def _with_counts(
        self,
        handle: JobHandle,
        status: JobStatus,
        report: PollReport,
        records: Mapping[str, list[TaskRecord]] | None,
    ) -> JobStatus:
        """``status`` with its calls counted from the round's files (and the tasks the scheduler runs)."""
        if status.counts is not None:
            return status
        files = report.files.get(handle.job_id)
        if files is None:  # the job's files were not read (cut-short output): no counts rather than wrong ones
            return status
        found = None if records is None else records.get(handle.native_id or "")
        running = None if not found else running_tasks(self.dialect, found, n_tasks_of(handle), files.exits)
        counts = call_counts(files, handle.size, running_tasks=running, final=status.state.final)
        return attrs.evolve(status, counts=counts)

    def _settle_preempted(self, job_id: str, status: JobStatus, now: float) -> JobStatus:
        """PREEMPTED is transient while the scheduler requeues; if it lasts, the job has ended."""
        if status.state is not JobState.PREEMPTED:
            self._preempted_since.pop(job_id, None)
            return status
        since = self._preempted_since.setdefault(job_id, now)
        limit = self.dialect.preempted_final_after
        if now - since <= limit:
            return status
        self._preempted_since.pop(job_id, None)
        return JobStatus(
            state=JobState.FAILED,
            reason=f"{status.reason or 'PREEMPTED'}: preempted and not requeued within {limit:.0f} s",
            exit_code=status.exit_code,
        )

    def _remember(self, job_id: str, status: JobStatus, report: PollReport) -> None:
        with self._lock:
            self._final[job_id] = _Final(
                status=status, files=report.outcomes.get(job_id), unsafe=report.unsafe.get(job_id)
            )
            self._final.move_to_end(job_id)
            while len(self._final) > MAX_REMEMBERED:
                self._final.popitem(last=False)

    def _cancel_never_runnable(
        self, transport: Transport, handles: Sequence[JobHandle], statuses: Mapping[str, JobStatus], config: Any
    ) -> None:
        """A job the scheduler will never start is reported FAILED; take it out of the queue too."""
        prefix = f"{self.dialect.label or self.name} will never start"
        for handle in handles:
            status = statuses.get(handle.job_id)
            if (
                status is not None
                and status.state is JobState.FAILED
                and (status.reason or "").startswith(prefix)
                and handle.job_id not in self._never_runnable
                and handle.native_id
            ):
                self._never_runnable[handle.job_id] = status
                command = self._command(self.dialect.cancel_argv(handle.native_id), config)
                run_script(transport, f"{command}\n", timeout=COMMAND_TIMEOUT)
                log.info(
                    "clustrix.job_never_runnable",
                    job_id=handle.job_id,
                    native_id=handle.native_id,
                    reason=status.reason,
                )

    # ---- fetch, cancel, logs ------------------------------------------------
    @hookimpl
    def clustrix_fetch(self, handle: JobHandle, config: Any) -> Sequence[Outcome | None]:
        if not handle.job_dir:
            return [None] * handle.size
        with self._lock:
            known = self._final.pop(handle.job_id, None)
        if known is not None and known.unsafe is not None:
            raise unsafe_outcomes(handle, known.unsafe)
        files = None if known is None else known.files
        if files is None:
            transport = self.transport(config if config is not None else _EMPTY_CONFIG)
            raw = hasattr(transport, "run_bytes")
            script = shell.render_fetch(job_id=handle.job_id, job_dir=handle.job_dir, raw=raw)
            _code, out, err = run_script(transport, script, timeout=None)
            report = parse_report(out, "", {handle.job_id})
            if handle.job_id in report.unsafe:
                raise unsafe_outcomes(handle, report.unsafe[handle.job_id])
            files = report.outcomes.get(handle.job_id)
            if files is None:
                raise ClustrixError(
                    f"fetching the outcomes of job {handle.job_id} from {transport.host} printed none: "
                    f"{err.decode(errors='replace').strip()}"
                )
        return [jobdir.decode_outcome(files[i]) if i in files else None for i in range(handle.size)]

    @hookimpl
    def clustrix_cancel(self, handle: JobHandle, config: Any) -> bool:
        if not handle.native_id or not handle.job_dir:
            return False
        config = config if config is not None else _EMPTY_CONFIG
        command = self._command(self.dialect.cancel_argv(handle.native_id), config)
        code, _out, _err = run_script(
            self.transport(config), shell.render_cancel(job_dir=handle.job_dir, cancel=command), timeout=COMMAND_TIMEOUT
        )
        log.info("clustrix.job_cancelled", job_id=handle.job_id, native_id=handle.native_id, ok=code == 0)
        return code == 0

    @hookimpl
    def clustrix_read_logs(self, handle: JobHandle, config: Any, stream: str) -> str:
        """The task logs of ``stream``; for an array, the failed tasks' (at most :data:`MAX_LOGS`)."""
        if stream not in ("stdout", "stderr"):
            raise ValueError(f"stream={stream!r} is not valid: use 'stdout' or 'stderr'")
        if not handle.job_dir or not handle.native_id:
            return ""
        d = self.dialect
        n_tasks = n_tasks_of(handle)
        names = [(t, d.log_name(handle.native_id, t + d.first_task_index, stream)) for t in range(n_tasks)]
        marker = secrets.token_hex(6)
        script = shell.render_logs(job_dir=handle.job_dir, names=names, limit=MAX_LOGS, marker=marker)
        _code, out, _err = run_script(self.transport(config if config is not None else _EMPTY_CONFIG), script)
        logs = parse_report(out, marker).logs
        if n_tasks == 1:
            return logs.get(0, "")
        return "\n".join(f"==> array task {task} <==\n{text}" for task, text in logs.items())

    @hookimpl
    def clustrix_remove_job_dir(self, handle: JobHandle, config: Any) -> bool:
        return jobdir.remove_job_dir(self.transport(config), handle)


@attrs.frozen(kw_only=True)
class Submission:
    """What a batch submit sends: the job to render, where its script goes, and the submit command line."""

    job: ScriptJob
    script_path: str
    #: The submit command as one shell line (environment prefix and quoting included), run in the job dir.
    command: str


def plan_submission(
    dialect: Dialect,
    spec: JobSpec,
    config: Any,
    *,
    base_dir: str,
    n_tasks: int,
    env: RemoteEnvironment,
    code: ShippedCode,
) -> Submission:
    """The :class:`ScriptJob` and submit command of ``spec`` under ``base_dir``; pure.

    ``env`` is the job's Python and shell prelude, ``code`` where the user's local code is. The
    real submit and the dry run both call this, so what a dry run shows is what is submitted.
    """
    job_dir = posixpath.join(base_dir, spec.job_id)
    job = ScriptJob(
        job_id=spec.job_id,
        name=spec.name,
        job_dir=job_dir,
        n_tasks=n_tasks,
        n_calls=spec.size,
        resources=spec.resources,
        python=env.python,
        prelude=(*env.job_prelude(job_dir), *code.prelude),
        runner_path=posixpath.join(job_dir, RUNNER_NAME),
        max_parallel=config.get("max_parallel_jobs"),
        config=config,
    )
    script_path = posixpath.join(job_dir, dialect.script_name)
    argv = dialect.submit_argv(script_path, job)
    return Submission(
        job=job,
        script_path=script_path,
        command=shell.command_line(argv, dialect.command_environment(config)),
    )


def _remove_refused_job_dir(transport: Transport, job: ScriptJob) -> None:
    """A job the scheduler refused leaves nothing behind: its directory (named after the job id) goes."""
    if posixpath.basename(job.job_dir.rstrip("/")) != job.job_id:
        return
    try:
        transport.run(["rm", "-rf", "--", job.job_dir], timeout=COMMAND_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - the refusal is the error to report; a leftover is only untidy
        log.warning("clustrix.cleanup_failed", job_id=job.job_id, job_dir=job.job_dir, error=repr(exc))


class _EmptyConfig:
    def get(self, key: str, default: Any = None) -> Any:
        return default


_EMPTY_CONFIG: Any = _EmptyConfig()


def _connection_key(config: Any) -> tuple[Any, ...]:
    key = getattr(config, "connection_key", None)
    return tuple(key) if key is not None else ()


def _runner_source() -> bytes:
    return Path(runner.__file__).read_bytes()
