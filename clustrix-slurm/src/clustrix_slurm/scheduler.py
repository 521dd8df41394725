"""The SLURM scheduler: its methods are the routed scheduler hooks of clustrix core.

All I/O goes through a :class:`clustrix.transport.Transport` (local on the login node,
SSH from a laptop), so the same code serves both. Per poll round it reads the jobs'
exit-code files and then asks SLURM once (``squeue``) about every job still open;
``sacct`` is asked only about jobs ``squeue`` no longer knows (older than ``MinJobAge``).
"""

from __future__ import annotations

import math
import posixpath
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from clustrix import environment, jobdir, runner
from clustrix.errors import JobError
from clustrix.hookspecs import hookimpl
from clustrix.jobs import JobHandle, JobSpec, JobState, JobStatus, Outcome
from clustrix.log import get_logger
from clustrix.plugins import transport_for
from clustrix.transport import CommandError, CommandResult, Transport
from clustrix_slurm import parse
from clustrix_slurm.script import (
    SbatchRequest,
    ScriptOptions,
    log_name,
    render_sbatch,
    validate_options,
    validate_resources,
)
from clustrix_slurm.status import job_status, status_from_exit_codes, status_from_outcomes

log = get_logger("clustrix.slurm")

SCRIPT_NAME = "job.sbatch"
#: The runner module, shipped as a file: ``python -m clustrix.runner`` would import the whole
#: clustrix package first (about 0.3 s of CPU per array task), the file needs only cloudpickle.
RUNNER_NAME = "clustrix_runner.py"
#: How long a job may be unknown to both squeue and sacct before it is reported lost.
LOST_AFTER_SECONDS = 60.0
#: How long a job may stay PREEMPTED without being requeued before it counts as ended.
#: With PreemptMode=REQUEUE SLURM moves it to REQUEUED/PENDING at once; PREEMPTED that
#: lasts means PreemptMode=CANCEL (or a non-requeueable job), which is final.
PREEMPTED_FINAL_AFTER = 60.0
#: sbatch messages that mean "try again", not "your request is wrong".
_TRANSIENT = ("temporarily unavailable", "socket timed out", "unable to contact", "connection refused", "try again")
#: How many task logs ``read_logs`` concatenates at most (the failed ones first).
MAX_LOGS = 5


class SbatchRejectedError(JobError, ValueError):
    """SLURM refused the job at submission; the message is sbatch's own."""


@attrs.frozen
class SiteInfo:
    """What this plugin reads once per cluster from ``scontrol show config``."""

    max_array_size: int
    accounting: bool


def tasks_for(size: int, calls_per_task: int | None, max_array_size: int) -> int:
    """How many array tasks a job of ``size`` calls gets: ``calls_per_task`` calls each, at most ``MaxArraySize``.

    With dynamic packing this is the most parallelism the job can have: tasks that start
    early steal the calls of tasks still pending, so tiny calls finish in the first few tasks.
    """
    wanted = math.ceil(size / calls_per_task) if calls_per_task else size
    return max(1, min(wanted, size, max_array_size))


class SlurmScheduler:
    """``cluster_type="slurm"``: each submit is one ``sbatch --parsable`` of a job array."""

    name = "slurm"
    #: What a job's Python must import: SLURM ships the runner file, so only cloudpickle (``clustrix doctor``).
    python_needs = ("cloudpickle",)

    def __init__(self, transport_factory: Callable[[Any], Transport] = transport_for) -> None:
        self._transport_factory = transport_factory
        self._lock = threading.Lock()
        self._transports: dict[tuple[Any, ...], Transport] = {}
        self._sites: dict[tuple[Any, ...], SiteInfo] = {}
        self._unknown_since: dict[str, float] = {}
        self._never_runnable: dict[str, JobStatus] = {}
        self._swept: set[str] = set()
        self._preempted_since: dict[str, float] = {}

    # ---- connections ------------------------------------------------------
    def transport(self, config: Any) -> Transport:
        """One transport per connection (host, port, user), kept for the process's life."""
        key = config.connection_key
        with self._lock:
            transport = self._transports.get(key)
            if transport is None:
                transport = self._transport_factory(config)
                self._transports[key] = transport
            return transport

    def site(self, config: Any, transport: Transport) -> SiteInfo:
        """``MaxArraySize`` and whether accounting is on, read once per cluster."""
        key = config.connection_key
        with self._lock:
            info = self._sites.get(key)
        if info is None:
            result = transport.run(["scontrol", "show", "config"], timeout=60)
            values = parse.parse_scontrol_config(result.stdout) if result.ok else {}
            info = SiteInfo(parse.max_array_size(values), parse.accounting_enabled(values))
            with self._lock:
                self._sites[key] = info
        return info

    # ---- submit -----------------------------------------------------------
    @hookimpl
    def clustrix_submit(self, spec: JobSpec, wake: Callable[[], None]) -> JobHandle:
        config = spec.config
        validate_resources(spec.resources)
        options = ScriptOptions.from_config(config)
        validate_options(options)
        transport = self.transport(config)
        options = self._with_environment(options, spec, transport)
        site = self.site(config, transport)
        n_tasks = tasks_for(spec.size, spec.resources.extra.get("calls_per_task"), site.max_array_size)
        tasks = jobdir.plan_tasks(spec.size, n_tasks)
        base = config.get("remote_work_dir") if config is not None else "~/.clustrix"
        job_dir = jobdir.stage(transport, base or "~/.clustrix", spec, tasks, claim=True)
        request = SbatchRequest(
            job_id=spec.job_id,
            name=spec.name,
            job_dir=job_dir,
            n_tasks=len(tasks),
            n_calls=spec.size,
            resources=spec.resources,
            options=options,
        )
        runner_path = posixpath.join(job_dir, RUNNER_NAME)
        transport.write_bytes(runner_path, _runner_source(), mode=0o600)
        request = attrs.evolve(request, runner_path=runner_path)
        script_path = posixpath.join(job_dir, SCRIPT_NAME)
        transport.write_bytes(script_path, render_sbatch(request).encode(), mode=0o700)
        native_id = self._sbatch(transport, script_path)
        log.info("clustrix.job_submitted", job_id=spec.job_id, native_id=native_id, tasks=len(tasks), calls=spec.size)
        return JobHandle(
            job_id=spec.job_id,
            scheduler=self.name,
            size=spec.size,
            native_id=native_id,
            host=transport.host,
            job_dir=job_dir,
            data={"tasks": len(tasks), "script": script_path},
        )

    def _with_environment(self, options: ScriptOptions, spec: JobSpec, transport: Transport) -> ScriptOptions:
        """The job's Python, from environment replication (the same as the ssh backend's).

        The login node checks ``python_executable`` (or builds and reuses a venv per
        environment hash) once per process; the batch script then runs that Python.
        A Python major.minor mismatch is refused here, before anything is submitted.
        """
        config = spec.config
        if config is None:
            return options
        snapshot = spec.environment or environment.capture_environment(config.get("replicate_distributions"))
        # the job runs the runner file shipped with it, so its Python needs only cloudpickle
        prepared = environment.prepare_remote_environment(transport, config, snapshot, needs=self.python_needs)
        activation = environment.activation_from_config(config)
        prelude = list(prepared.prelude)
        extra = prelude[len(activation) :] if prelude[: len(activation)] == activation else prelude
        return attrs.evolve(options, python=prepared.python, extra_setup=tuple(extra))

    def _sbatch(self, transport: Transport, script_path: str) -> str:
        argv = ["sbatch", "--parsable", script_path]
        result: CommandResult | None = None
        for attempt in range(4):
            result = transport.run(argv, timeout=120)
            if result.ok:
                return parse.parse_sbatch_parsable(result.stdout)
            message = result.stderr.lower()
            if not any(word in message for word in _TRANSIENT):
                break
            time.sleep(0.5 * 2**attempt)
        assert result is not None
        reason = result.stderr.strip() or result.stdout.strip() or f"sbatch exited {result.returncode}"
        raise SbatchRejectedError(f"SLURM refused the job: {reason}", reason=reason, state=JobState.FAILED)

    # ---- poll -------------------------------------------------------------
    @hookimpl
    def clustrix_poll(self, handles: Sequence[JobHandle], config: Any) -> Mapping[str, JobStatus]:
        transport = self.transport(config)
        statuses: dict[str, JobStatus] = {}
        open_handles: list[JobHandle] = []
        for handle in handles:
            if handle.job_id in self._never_runnable:  # we cancelled it: keep SLURM's first answer
                statuses[handle.job_id] = self._never_runnable[handle.job_id]
                continue
            status = self._status_from_files(transport, handle)
            if status is not None:
                statuses[handle.job_id] = status
            else:
                open_handles.append(handle)
        if not open_handles:
            return statuses

        records = self._squeue(transport, [h.native_id for h in open_handles if h.native_id])
        unresolved = self._statuses_from_records(transport, open_handles, records, statuses)
        if unresolved and self.site(config, transport).accounting:
            records = self._sacct(transport, [h.native_id for h in unresolved if h.native_id])
            unresolved = self._statuses_from_records(transport, unresolved, records, statuses)
        now = time.monotonic()
        for handle in unresolved:
            since = self._unknown_since.setdefault(handle.job_id, now)
            if now - since > LOST_AFTER_SECONDS:
                statuses[handle.job_id] = JobStatus(
                    state=JobState.FAILED,
                    reason=f"SLURM no longer knows job {handle.native_id} (neither squeue nor sacct report it)",
                )
        for job_id, status in list(statuses.items()):
            statuses[job_id] = self._settle_preempted(job_id, status, now)
            if statuses[job_id].state.final:
                self._unknown_since.pop(job_id, None)
        self._cancel_never_runnable(transport, handles, statuses)
        return statuses

    def _status_from_files(self, transport: Transport, handle: JobHandle) -> JobStatus | None:
        """The job's final status when its files say it is over (one listdir), else None.

        Every call's outcome present means done, even with array tasks still pending (they
        are cancelled, once, to free the queue). Every task's exit-code file present means
        done too (a call may have written nothing: core reports it as lost).
        """
        if not handle.job_dir:
            return None
        try:
            names = transport.listdir(posixpath.join(handle.job_dir, runner.OUT_DIR))
        except FileNotFoundError:
            return None
        files = jobdir.outcome_files(names)
        n_tasks = _n_tasks(handle)
        all_exits = all(t in files.exit_tasks for t in range(n_tasks))
        if files.complete(handle.size):
            if not all_exits and n_tasks > 1:
                self._sweep(transport, handle)
            return status_from_outcomes(files)
        if not all_exits:
            return None
        codes = jobdir.finished_tasks(transport, handle.job_dir)
        return status_from_exit_codes(codes) if all(t in codes for t in range(n_tasks)) else None

    def _settle_preempted(self, job_id: str, status: JobStatus, now: float) -> JobStatus:
        """PREEMPTED is transient while SLURM requeues; if it lasts, the job has ended."""
        if status.state is not JobState.PREEMPTED:
            self._preempted_since.pop(job_id, None)
            return status
        since = self._preempted_since.setdefault(job_id, now)
        if now - since <= PREEMPTED_FINAL_AFTER:
            return status
        self._preempted_since.pop(job_id, None)
        return JobStatus(
            state=JobState.FAILED,
            reason=f"{status.reason or 'PREEMPTED'}: preempted and not requeued within {PREEMPTED_FINAL_AFTER:.0f} s",
            exit_code=status.exit_code,
        )

    def _sweep(self, transport: Transport, handle: JobHandle) -> None:
        """Cancel the array tasks still pending once every call is done (they would find no work).

        Running tasks are left alone: they are only writing their exit-code files.
        """
        if handle.job_id in self._swept or not handle.native_id:
            return
        self._swept.add(handle.job_id)
        result = transport.run(["scancel", "--state=PENDING", handle.native_id], timeout=60)
        log.info("clustrix.job_swept", job_id=handle.job_id, native_id=handle.native_id, ok=result.ok)

    def _statuses_from_records(
        self,
        transport: Transport,
        handles: Sequence[JobHandle],
        records: Mapping[str, list[parse.TaskRecord]],
        statuses: dict[str, JobStatus],
    ) -> list[JobHandle]:
        """Put into ``statuses`` what ``records`` (squeue's or sacct's) say; return the handles they leave open."""
        unresolved = []
        for handle in handles:
            status = self._combine(transport, handle, records.get(handle.native_id or "", []))
            if status is None:
                unresolved.append(handle)
            else:
                statuses[handle.job_id] = status
        return unresolved

    def _combine(self, transport: Transport, handle: JobHandle, records: list[parse.TaskRecord]) -> JobStatus | None:
        if not records:
            return None
        n_tasks = _n_tasks(handle)
        status = job_status(records, n_tasks, {})
        if status is not None and status.state.final and handle.job_dir:
            # tasks may have finished between the file check and the query: read their codes now
            codes = jobdir.finished_tasks(transport, handle.job_dir)
            status = job_status(records, n_tasks, codes)
        return status

    def _squeue(self, transport: Transport, native_ids: list[str]) -> dict[str, list[parse.TaskRecord]]:
        if not native_ids:
            return {}
        result = transport.run(parse.squeue_argv(native_ids), timeout=60)
        if not result.ok:
            if "invalid job id" in result.stderr.lower():
                return {}  # every job listed has left slurmctld's memory
            raise CommandError(result)
        return _group(parse.parse_squeue(result.stdout))

    def _sacct(self, transport: Transport, native_ids: list[str]) -> dict[str, list[parse.TaskRecord]]:
        if not native_ids:
            return {}
        result = transport.run(parse.sacct_argv(native_ids), timeout=60)
        if not result.ok:
            raise CommandError(result)
        return _group(parse.parse_sacct(result.stdout))

    def _cancel_never_runnable(
        self, transport: Transport, handles: Sequence[JobHandle], statuses: Mapping[str, JobStatus]
    ) -> None:
        """A job SLURM will never start is reported FAILED; take it out of the queue too."""
        for handle in handles:
            status = statuses.get(handle.job_id)
            if (
                status is not None
                and status.state is JobState.FAILED
                and (status.reason or "").startswith("SLURM will never start")
                and handle.job_id not in self._never_runnable
                and handle.native_id
            ):
                self._never_runnable[handle.job_id] = status
                transport.run(["scancel", handle.native_id], timeout=60)
                log.info(
                    "clustrix.job_never_runnable",
                    job_id=handle.job_id,
                    native_id=handle.native_id,
                    reason=status.reason,
                )

    # ---- fetch, cancel, logs ---------------------------------------------
    @hookimpl
    def clustrix_fetch(self, handle: JobHandle, config: Any) -> Sequence[Outcome | None]:
        if not handle.job_dir:
            return [None] * handle.size
        return jobdir.read_outcomes(self.transport(config), handle.job_dir, handle.size)

    @hookimpl
    def clustrix_cancel(self, handle: JobHandle, config: Any) -> bool:
        if not handle.native_id:
            return False
        result = self.transport(config).run(["scancel", handle.native_id], timeout=60)
        log.info("clustrix.job_cancelled", job_id=handle.job_id, native_id=handle.native_id, ok=result.ok)
        return result.ok

    @hookimpl
    def clustrix_read_logs(self, handle: JobHandle, config: Any, stream: str) -> str:
        """The task logs of ``stream``; for an array, the failed tasks' (at most :data:`MAX_LOGS`)."""
        if not handle.job_dir or not handle.native_id:
            return ""
        transport = self.transport(config)
        n_tasks = _n_tasks(handle)
        tasks = list(range(n_tasks))
        if n_tasks > 1:
            codes = jobdir.finished_tasks(transport, handle.job_dir)
            failed = [t for t in tasks if codes.get(t) != 0]
            tasks = failed or tasks
        parts = []
        for task in tasks[:MAX_LOGS]:
            path = posixpath.join(handle.job_dir, log_name(handle.native_id, task, stream))
            try:
                text = transport.read_bytes(path).decode(errors="replace")
            except FileNotFoundError:
                continue
            parts.append(f"==> array task {task} <==\n{text}" if n_tasks > 1 else text)
        return "\n".join(parts)


def _runner_source() -> bytes:
    return Path(runner.__file__).read_bytes()


def _n_tasks(handle: JobHandle) -> int:
    return int(handle.data.get("tasks", handle.size))


def _group(records: list[parse.TaskRecord]) -> dict[str, list[parse.TaskRecord]]:
    grouped: dict[str, list[parse.TaskRecord]] = {}
    for record in records:
        grouped.setdefault(record.job_id, []).append(record)
    return grouped
