"""A third-party scheduler in one module: each job runs ``python -m clustrix.remote.runner`` in a
detached local subprocess, in a job directory staged by :mod:`clustrix_testsched_jobdir`.

It also shows the other hooks a plugin may implement: a configuration key, a wrapper
around every scheduler's submit, an observer of submissions and an environment entry.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from clustrix_testsched_jobdir import finished_tasks, read_outcomes, runner_argv, stage

from clustrix.plugin.hookspecs import hookimpl
from clustrix.plugin.transport import LocalTransport
from clustrix.plugin.types import JobHandle, JobSpec, JobState, JobStatus, Outcome
from clustrix.remote.jobdir import plan_tasks, remove_job_dir

#: Every job this process saw submitted, through the observer hook.
SUBMITTED: list[str] = []
#: The schedulers whose submit the wrapper hook wrapped.
WRAPPED: list[str] = []


class SubprocessScheduler:
    """Runs each array task as a ``python -m clustrix.remote.runner`` process of its own."""

    #: the runner uses this very interpreter: there is no environment to rebuild
    needs_environment = False
    persistent = True  # another process can attach to a job: its directory and pids are in the handle
    python_needs = ("clustrix.remote.runner", "cloudpickle")  # python -m clustrix.remote.runner
    resource_keys = {"testsched_priority": "a resource keyword only this test plugin declares"}

    def __init__(self) -> None:
        self.transport = LocalTransport()

    @hookimpl
    def clustrix_submit(self, spec: JobSpec, wake: Callable[[], None]) -> JobHandle:
        tasks = plan_tasks(spec.size, spec.config.get("max_parallel_jobs") or 4)
        job_dir = stage(self.transport, spec.config.remote_work_dir, spec, tasks)
        python = spec.config.python_executable or sys.executable
        pids = []
        for task in range(len(tasks)):
            with (
                open(os.path.join(job_dir, f"task-{task}.out"), "wb") as out,
                open(os.path.join(job_dir, f"task-{task}.err"), "wb") as err,
            ):
                proc = subprocess.Popen(
                    runner_argv(python, job_dir, task), stdout=out, stderr=err, start_new_session=True
                )
            pids.append(proc.pid)
        return JobHandle(
            job_id=spec.job_id,
            scheduler="subprocess",
            size=spec.size,
            host="localhost",
            job_dir=job_dir,
            data={"pids": pids, "tasks": len(tasks)},
        )

    @hookimpl
    def clustrix_poll(self, handles: Sequence[JobHandle]) -> Mapping[str, JobStatus]:
        statuses = {}
        for handle in handles:
            done = finished_tasks(self.transport, handle.job_dir)
            if len(done) == handle.data["tasks"]:
                statuses[handle.job_id] = JobStatus(state=JobState.COMPLETED, exit_code=max(done.values()))
            elif any(_alive(pid) for pid in handle.data["pids"]):
                statuses[handle.job_id] = JobStatus(state=JobState.RUNNING)
            else:
                statuses[handle.job_id] = JobStatus(state=JobState.FAILED, reason="runner exited without a result")
        return statuses

    @hookimpl
    def clustrix_fetch(self, handle: JobHandle) -> Sequence[Outcome | None]:
        return read_outcomes(self.transport, handle.job_dir, handle.size)

    @hookimpl
    def clustrix_cancel(self, handle: JobHandle) -> bool:
        for pid in handle.data["pids"]:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return True

    @hookimpl
    def clustrix_remove_job_dir(self, handle: JobHandle) -> bool:
        return remove_job_dir(self.transport, handle)

    @hookimpl
    def clustrix_read_logs(self, handle: JobHandle, stream: str) -> str:
        suffix = "err" if stream == "stderr" else "out"
        texts = []
        for task in range(handle.data["tasks"]):
            try:
                with open(
                    os.path.join(handle.job_dir, f"task-{task}.{suffix}"), encoding="utf-8", errors="replace"
                ) as fh:
                    texts.append(fh.read())
            except FileNotFoundError:
                pass
        return "".join(texts)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child (another process submitted it)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return waited == 0


@hookimpl
def clustrix_register_schedulers(register: Callable[[str, object], None]) -> None:
    register("subprocess", SubprocessScheduler())


@hookimpl
def clustrix_config_keys() -> Mapping[str, Any]:
    return {"testsched_marker": None}


@hookimpl
def clustrix_capture_environment() -> Mapping[str, Any]:
    return {"testsched": True, "python": "0.0"}  # "python" is core's: this one must lose


@hookimpl
def clustrix_job_submitted(handle: JobHandle) -> None:
    SUBMITTED.append(handle.job_id)


@hookimpl(wrapper=True)
def clustrix_submit(spec: JobSpec) -> Any:
    handle = yield
    WRAPPED.append(handle.scheduler)
    return handle
