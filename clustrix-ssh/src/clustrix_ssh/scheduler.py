"""The ``ssh`` backend: run calls on a remote host without a batch scheduler.

Submit is one remote command: it creates the private job directory, stores the payload
sent on stdin, and starts the runner processes detached (``setsid nohup``) so the job
survives a dropped connection or the caller's exit. Poll is one remote command for all
watched jobs; fetch reads the outcome files; cancel kills the job's process group.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from clustrix import environment, jobdir
from clustrix.errors import ClustrixError
from clustrix.hookspecs import hookimpl
from clustrix.jobs import JobHandle, JobSpec, JobState, JobStatus, Outcome
from clustrix.log import get_logger
from clustrix.plugins import transport_for
from clustrix_ssh import scripts

if TYPE_CHECKING:
    from clustrix.config import ClusterConfig

log = get_logger("clustrix.ssh")

#: At most this many runner tasks per job; calls beyond it are packed into the tasks.
MAX_TASKS = 64


class SubmitError(ClustrixError):
    """The remote host did not start the job; the message carries the remote stderr."""


class SSHScheduler:
    """Scheduler hooks for ``cluster_type="ssh"``; the routed methods are pluggy hookimpls."""

    needs_environment = True

    @hookimpl
    def clustrix_submit(self, spec: JobSpec, wake: Callable[[], None]) -> JobHandle:
        config: ClusterConfig = spec.config
        transport = transport_for(config)
        snapshot = spec.environment or environment.capture_environment(config.get("replicate_distributions"))
        # before anything is written remotely: a Python mismatch or a failed build stops here
        env = environment.prepare_remote_environment(transport, config, snapshot)
        base_dir = transport.expand(config.get("remote_work_dir") or "~/.clustrix")
        job_dir = posixpath.join(base_dir, spec.job_id)
        tasks = jobdir.plan_tasks(spec.size, MAX_TASKS)
        driver = scripts.render_driver(
            python=env.python,
            job_dir=job_dir,
            n_tasks=len(tasks),
            parallel=config.get("max_parallel_jobs"),
            cores=getattr(spec.resources, "cores", None),
            prelude=env.prelude,
        )
        script = scripts.render_launch(base_dir=base_dir, job_dir=job_dir, driver=driver)
        result = transport.run(["sh", "-c", script], input=jobdir.encode_payload(spec, tasks))
        pgid = _parse_pgid(result.stdout)
        if not result.ok or pgid is None:
            raise SubmitError(
                f"starting job {spec.job_id} on {transport.host} failed (exit {result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        log.info(
            "clustrix.job_submitted",
            scheduler="ssh",
            job_id=spec.job_id,
            host=transport.host,
            pgid=pgid,
            size=spec.size,
        )
        return JobHandle(
            job_id=spec.job_id,
            scheduler="ssh",
            size=spec.size,
            native_id=str(pgid),
            host=transport.host,
            job_dir=job_dir,
            data={"pgid": pgid, "tasks": len(tasks), "python": env.python},
        )

    @hookimpl
    def clustrix_poll(self, handles: Sequence[JobHandle], config: ClusterConfig) -> Mapping[str, JobStatus]:
        if not handles:
            return {}
        items = [
            scripts.PollItem(h.job_id, h.job_dir or "", int(h.data["pgid"]), int(h.data.get("tasks", h.size)))
            for h in handles
        ]
        result = transport_for(config).run(["sh", "-c", scripts.render_poll(items)])
        return parse_poll(result.stdout)

    @hookimpl
    def clustrix_fetch(self, handle: JobHandle, config: ClusterConfig) -> Sequence[Outcome | None]:
        return jobdir.read_outcomes(transport_for(config), _job_dir(handle), handle.size)

    @hookimpl
    def clustrix_cancel(self, handle: JobHandle, config: ClusterConfig) -> bool:
        script = scripts.render_cancel(job_dir=_job_dir(handle), pgid=int(handle.data["pgid"]))
        transport_for(config).run(["sh", "-c", script], check=True)
        return True

    @hookimpl
    def clustrix_read_logs(self, handle: JobHandle, config: ClusterConfig, stream: str) -> str:
        if stream not in (scripts.STDOUT, scripts.STDERR):
            raise ValueError(f"stream={stream!r} is not valid: use 'stdout' or 'stderr'")
        try:
            data = transport_for(config).read_bytes(posixpath.join(_job_dir(handle), stream))
        except FileNotFoundError:
            return ""
        return data.decode(errors="replace")


def _job_dir(handle: JobHandle) -> str:
    if not handle.job_dir:
        raise ValueError(f"job {handle.job_id} has no job directory recorded")
    return handle.job_dir


def _parse_pgid(stdout: str) -> int | None:
    for line in stdout.splitlines():
        if line.startswith("pgid "):
            value = line.split()[1]
            if value.isdigit():
                return int(value)
    return None


def parse_poll(stdout: str) -> dict[str, JobStatus]:
    """Map the poll script's lines to job states (see :data:`scripts.POLL_WORDS`)."""
    statuses: dict[str, JobStatus] = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[1] not in scripts.POLL_WORDS:
            continue
        job_id, word = parts[0], parts[1]
        if word == "done":
            code = int(parts[2]) if len(parts) > 2 and parts[2].lstrip("-").isdigit() else None
            statuses[job_id] = JobStatus(state=JobState.COMPLETED, exit_code=code)
        elif word == "running":
            statuses[job_id] = JobStatus(state=JobState.RUNNING)
        elif word == "cancelled":
            statuses[job_id] = JobStatus(state=JobState.CANCELLED, reason="cancelled: the process group was killed")
        else:
            statuses[job_id] = JobStatus(
                state=JobState.FAILED,
                reason="the job's processes are gone and not every task wrote its exit file (killed, or the runner crashed)",
            )
    return statuses


__all__ = ["SSHScheduler", "SubmitError", "parse_poll"]
