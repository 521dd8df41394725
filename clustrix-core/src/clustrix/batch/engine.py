"""The batch engine: the routed scheduler hooks, implemented once for every :class:`~clustrix.batch.dialect.Dialect`.

Register ``BatchScheduler(MyDialect())`` under the dialect's name and the scheduler works on
the login node itself (local transport) and from a laptop (SSH transport), with each
operation one remote command:

- **submit** (:mod:`clustrix.batch.submit`): the environment check (once per process and
  target, :mod:`clustrix.remote.environment`), then one command that creates the private job
  directory, stores the payload (stdin), the runner file and the job script, and calls the
  scheduler's submit command. The site query
  (``MaxArraySize``) runs only for maps larger than the dialect's default array size.
- **poll**: one command per host and round for all its open jobs: the status query, then
  every job's exit-code files, outcome count and failure markers; finished jobs' outcomes come
  back inline. Each status counts the job's calls done, failed, running and pending
  (:func:`~clustrix.batch.status.call_counts`: outcomes and claims from the same command,
  running tasks from the status query), for the progress bar and ``clustrix jobs``. Jobs
  the status query no longer knows are asked of the history query (one more command, only
  then). Lost and preempted timers, never-runnable detection (the job is reported FAILED and
  cancelled), and sweeping the pending tasks of an array whose calls are all done, are all here.
- **watch** (a dialect that sets :attr:`~clustrix.batch.dialect.Dialect.watch`, the ``ssh``
  backend): right after the submit, one command waits on the target until the job is final
  and reports like a poll round with the outcomes inline, then wakes core's poller; a
  one-call job under watch is not polled, so a warm call costs two commands.
- **fetch**: the outcomes the poll (or watch) brought back, else one command.
- **cancel**, **logs**: one command each.

The scheduler's questions about itself (its commands on the PATH, the site's limits) are in
:mod:`clustrix.batch.commands`. Poll, cancel, fetch and logs work from the
:class:`~clustrix.plugin.types.JobHandle` and the stored configuration alone, so the CLI and
:meth:`clustrix.Job.attach` work in another process.
"""

from __future__ import annotations

import collections
import functools
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import attrs

from clustrix.batch import retry, shell
from clustrix.batch.commands import SchedulerCommands
from clustrix.batch.dependencies import holds_jobs, may_remove, sweep_command
from clustrix.batch.dialect import Dialect, TaskRecord
from clustrix.batch.reports import PollReport, QueryOutput, parse_report
from clustrix.batch.status import (
    JobFiles,
    as_cancelled,
    call_counts,
    job_status,
    never_runnable,
    running_tasks,
    status_from_files,
)
from clustrix.batch.submit import COMMAND_TIMEOUT, JOB_NEEDS, dry_run, submit_job
from clustrix.config.settings import ClusterConfig
from clustrix.errors import ClustrixError, SchedulerCommandError
from clustrix.log import get_logger
from clustrix.plugin import dryrun
from clustrix.plugin.hookspecs import hookimpl
from clustrix.plugin.manager import transport_for
from clustrix.plugin.transport import Transport
from clustrix.plugin.types import JobHandle, JobSpec, JobState, JobStatus, Outcome
from clustrix.remote import jobdir
from clustrix.remote.report import run_script_bytes, unsafe_outcomes

log = get_logger("clustrix.batch")

#: How many task logs :meth:`BatchScheduler.clustrix_read_logs` returns at most (the failed ones first).
MAX_LOGS = 5
#: Final jobs whose inlined outcomes this process holds for fetch (oldest dropped first).
MAX_REMEMBERED = 1024
#: Watch commands open at once per connection (OpenSSH allows 10 sessions per connection by
#: default: the rest stay free for submits and polls). Further jobs are polled.
MAX_WATCHES = 4
#: A watch command gives up after this long and is sent again while the job runs.
WATCH_SECONDS = 120.0


@attrs.frozen
class _Final:
    """A job found final by a poll or watch: its status and, when inlined, its outcome files."""

    status: JobStatus
    files: dict[int, bytes] | None
    #: (reason, entry) when the job's files failed the privacy check
    unsafe: tuple[str, str] | None = None


def n_tasks_of(handle: JobHandle) -> int:
    return int(handle.data.get("tasks", handle.size))


class BatchScheduler(SchedulerCommands):
    """The scheduler hooks for one batch dialect; register an instance under ``dialect.name``."""

    needs_environment = True  # the declared capabilities of clustrix.plugin.types.Scheduler
    persistent = True

    def __init__(
        self, dialect: Dialect, transport_factory: Callable[[ClusterConfig], Transport] = transport_for
    ) -> None:
        super().__init__(dialect, transport_factory)
        #: What a job's Python must import (``clustrix doctor`` checks it): the runner file ships with the job.
        self.python_needs: tuple[str, ...] = JOB_NEEDS
        self.resource_keys = dialect.extras  # the @cluster keywords core accepts at decoration
        self._unknown_since: dict[str, float] = {}
        self._preempted_since: dict[str, float] = {}
        self._never_runnable: dict[str, JobStatus] = {}
        #: Jobs the last decision found never runnable (:func:`clustrix.batch.status.never_runnable`): to cancel.
        self._found_never_runnable: set[str] = set()
        #: Jobs a watch command is waiting for, and watches open per transport.
        self._watched: set[str] = set()
        self._watches: dict[int, int] = {}
        self._swept: set[str] = set()
        self._final: collections.OrderedDict[str, _Final] = collections.OrderedDict()

    def __repr__(self) -> str:
        return f"BatchScheduler({type(self.dialect).__name__})"

    @property
    def holds_dependencies(self) -> bool:
        """Whether the scheduler itself holds a job until its inputs are ready (else the client chains)."""
        return holds_jobs(self.dialect)

    # ---- submit -------------------------------------------------------------
    @hookimpl
    def clustrix_submit(self, spec: JobSpec, wake: Callable[[], None]) -> JobHandle:
        handle, transport = submit_job(self, spec)
        if self.dialect.watch:
            self._start_watch(transport, handle, spec.config, wake)
        return handle

    @hookimpl
    def clustrix_dry_run(self, spec: JobSpec) -> dryrun.DryRun:
        return dry_run(self, spec)

    def resubmit(
        self, handle: JobHandle, config: ClusterConfig, calls: Sequence[int], *, unless_cancelled: bool = False
    ) -> JobHandle:
        """Run ``calls`` of the finished job again, in the same job (:mod:`clustrix.batch.retry`)."""
        return retry.resubmit(self, handle, config, calls, unless_cancelled=unless_cancelled)

    def forget(self, job_id: str) -> None:
        """Drop what this process knows of the job's last run (it was submitted again)."""
        with self._lock:
            for known in (self._final, self._unknown_since, self._preempted_since, self._never_runnable):
                known.pop(job_id, None)
            for found in (self._swept, self._found_never_runnable):
                found.discard(job_id)

    # ---- poll ---------------------------------------------------------------
    @hookimpl
    def clustrix_poll(self, handles: Sequence[JobHandle], config: ClusterConfig) -> Mapping[str, JobStatus]:
        statuses: dict[str, JobStatus] = {}
        open_handles: list[JobHandle] = []
        with self._lock:
            for handle in handles:
                known = self._final.get(handle.job_id)
                if known is not None:
                    statuses[handle.job_id] = known.status
                elif handle.job_id in self._never_runnable:  # we cancelled it: keep the first answer
                    statuses[handle.job_id] = self._never_runnable[handle.job_id]
                elif handle.job_id in self._watched and handle.size == 1:
                    statuses[handle.job_id] = JobStatus(state=JobState.RUNNING)  # its watch reports the end
                elif handle.job_dir:
                    open_handles.append(handle)  # a map is asked even while watched: its calls are counted
        if not open_handles:
            return statuses
        transport = self.transport(config)
        report = self._poll_round(transport, open_handles, config)
        statuses.update(self._evaluate(transport, open_handles, report, config))
        return statuses

    def _evaluate(
        self, transport: Transport, handles: Sequence[JobHandle], report: PollReport, config: ClusterConfig
    ) -> dict[str, JobStatus]:
        """The statuses one poll (or watch) round's report proves; final ones are remembered for fetch."""
        statuses: dict[str, JobStatus] = {}
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
        for handle in handles:
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
        for handle in handles:
            job_id = handle.job_id
            if job_id not in statuses and records is not None:
                since = self._unknown_since.setdefault(job_id, now)
                if now - since > self.dialect.lost_after_seconds:
                    reason = self.dialect.lost_reason(handle.native_id or "")
                    statuses[job_id] = JobStatus(state=JobState.FAILED, reason=reason)
            if job_id in statuses:
                statuses[job_id] = self._settle_preempted(job_id, statuses[job_id], now)
                statuses[job_id] = self._with_counts(handle, statuses[job_id], report, records)
                if statuses[job_id].state.final:
                    self._unknown_since.pop(job_id, None)
                    self._remember(job_id, statuses[job_id], report)
        self._cancel_never_runnable(transport, handles, statuses, config)
        return statuses

    def _poll_round(
        self,
        transport: Transport,
        handles: Sequence[JobHandle],
        config: ClusterConfig,
        *,
        wait: shell.Wait | None = None,
    ) -> PollReport:
        d = self.dialect
        jobs = []
        for handle in handles:
            n_tasks = n_tasks_of(handle)
            sweep = None
            if n_tasks > 1 and handle.native_id and handle.job_id not in self._swept:
                # an upstream's dependants are released first (a cancelled task would fail their afterok)
                command = functools.partial(self._command, config=config)
                sweep = sweep_command(d, handle, command)
            jobs.append(
                shell.PollJob(
                    job_id=handle.job_id, job_dir=str(handle.job_dir), n_tasks=n_tasks, n_calls=handle.size, sweep=sweep
                )
            )
        native_ids = [h.native_id for h in handles if h.native_id]
        status = self._command(d.status_argv(native_ids), config) if native_ids else None
        marker = secrets.token_hex(6)
        script = shell.render_poll(jobs, status=status, marker=marker, wait=wait)
        # a watch's timeout: a half-open link would otherwise block its thread until TCP gives up (~15 min)
        timeout = COMMAND_TIMEOUT if wait is None else wait.seconds + 60
        code, out, err = run_script_bytes(transport, script, timeout=timeout)
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
        d = self.dialect
        n_tasks = n_tasks_of(handle)
        status = status_from_files(files, n_tasks, handle.size, d.timeout_exit_code)
        if status is not None:
            return status
        found = records.get(handle.native_id or "", [])
        never = never_runnable(d, found, n_tasks, files.exits) if found else None
        if never is not None:
            self._found_never_runnable.add(handle.job_id)
        status = job_status(d, found, n_tasks, files.exits) if found else None
        return as_cancelled(status, files)

    def _from_history(
        self, transport: Transport, handles: Sequence[JobHandle], report: PollReport, config: ClusterConfig
    ) -> dict[str, JobStatus]:
        d = self.dialect
        ids = [h.native_id for h in handles if h.native_id]
        argv = d.history_argv(ids) if ids else None
        if argv is None:
            return {}
        if d.site_argv() is not None and not self.site(config, transport).history:
            return {}
        output = self.query(transport, self._command(argv, config))
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
        self,
        transport: Transport,
        handles: Sequence[JobHandle],
        statuses: Mapping[str, JobStatus],
        config: ClusterConfig,
    ) -> None:
        """A job the scheduler will never start is reported FAILED; take it out of the queue too."""
        for handle in handles:
            status = statuses.get(handle.job_id)
            if (
                status is not None
                and status.state is JobState.FAILED
                and handle.job_id in self._found_never_runnable
                and handle.job_id not in self._never_runnable
                and handle.native_id
            ):
                self._never_runnable[handle.job_id] = status
                command = self._command(self.dialect.cancel_argv(handle.native_id), config)
                run_script_bytes(transport, f"{command}\n", timeout=COMMAND_TIMEOUT)
                log.info(
                    "clustrix.job_never_runnable",
                    job_id=handle.job_id,
                    native_id=handle.native_id,
                    reason=status.reason,
                )

    # ---- watch ----------------------------------------------------------------
    def _start_watch(
        self, transport: Transport, handle: JobHandle, config: ClusterConfig, wake: Callable[[], None]
    ) -> None:
        with self._lock:
            if self._watches.get(id(transport), 0) >= MAX_WATCHES:
                return  # polled instead
            self._watches[id(transport)] = self._watches.get(id(transport), 0) + 1
            self._watched.add(handle.job_id)
        thread = threading.Thread(
            target=self._watch,
            args=(transport, handle, config, wake),
            name=f"clustrix-watch-{handle.job_id}",
            daemon=True,
        )
        thread.start()

    def _watch(self, transport: Transport, handle: JobHandle, config: ClusterConfig, wake: Callable[[], None]) -> None:
        """Send watch commands while the job runs; a final status is remembered, anything else is left to the poller."""
        alive = self.dialect.alive_argv(handle.native_id or "")
        wait = shell.Wait(alive=None if alive is None else self._command(alive, config), seconds=WATCH_SECONDS)
        try:
            while True:
                report = self._poll_round(transport, [handle], config, wait=wait)
                status = self._evaluate(transport, [handle], report, config).get(handle.job_id)
                if status is None or status.state is not JobState.RUNNING:
                    break
        except Exception as exc:  # noqa: BLE001 - the poller takes over; it reports lasting failures
            log.debug("clustrix.watch_failed", job_id=handle.job_id, error=repr(exc))
        finally:
            with self._lock:
                self._watched.discard(handle.job_id)
                self._watches[id(transport)] -= 1
            wake()

    # ---- fetch, cancel, logs ------------------------------------------------
    @hookimpl
    def clustrix_fetch(self, handle: JobHandle, config: ClusterConfig) -> Sequence[Outcome | None]:
        if not handle.job_dir:
            return [None] * handle.size
        with self._lock:
            known = self._final.pop(handle.job_id, None)
        if known is not None and known.unsafe is not None:
            raise unsafe_outcomes(handle, known.unsafe)
        files = None if known is None else known.files
        if files is None:
            transport = self.transport(config)
            script = shell.render_fetch(job_id=handle.job_id, job_dir=handle.job_dir)
            _code, out, err = run_script_bytes(transport, script, timeout=None)
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
    def clustrix_cancel(self, handle: JobHandle, config: ClusterConfig) -> bool:
        if not handle.native_id or not handle.job_dir:
            return False
        command = self._command(self.dialect.cancel_argv(handle.native_id), config)
        code, _out, _err = run_script_bytes(
            self.transport(config), shell.render_cancel(job_dir=handle.job_dir, cancel=command), timeout=COMMAND_TIMEOUT
        )
        log.info("clustrix.job_cancelled", job_id=handle.job_id, native_id=handle.native_id, ok=code == 0)
        return code == 0

    @hookimpl
    def clustrix_read_logs(self, handle: JobHandle, config: ClusterConfig, stream: str) -> str:
        """The task logs of ``stream``; for an array, the failed tasks' (at most :data:`MAX_LOGS`)."""
        if stream not in ("stdout", "stderr"):
            raise ValueError(f"stream={stream!r} is not valid: use 'stdout' or 'stderr'")
        if not handle.job_dir or not handle.native_id:
            return ""
        d = self.dialect
        n_tasks = n_tasks_of(handle)
        names = [(t, d.log_name(handle.native_id, t + d.first_task_index, stream)) for t in range(n_tasks)]
        one_file = len({name for _task, name in names}) == 1  # every task writes the job's log (ssh, tsp)
        marker = secrets.token_hex(6)
        script = shell.render_logs(
            job_dir=handle.job_dir, names=names[:1] if one_file else names, limit=MAX_LOGS, marker=marker
        )
        _code, out, _err = run_script_bytes(self.transport(config), script)
        logs = parse_report(out, marker).logs
        if n_tasks == 1 or one_file:
            return logs.get(0, "")
        return "\n".join(f"==> array task {task} <==\n{text}" for task, text in logs.items())

    @hookimpl
    def clustrix_remove_job_dir(self, handle: JobHandle, config: ClusterConfig) -> bool:
        if not may_remove(handle.job_id):  # dependants still read its results (see clustrix.batch.dependencies)
            return False
        return jobdir.remove_job_dir(self.transport(config), handle)
