"""The ``ssh`` backend: run calls on a remote host without a batch scheduler.

Submit is one remote command: it creates the private job directory, stores the payload
sent on stdin, and starts the runner processes detached (``setsid nohup``) so the job
survives a dropped connection or the caller's exit. A *watch* command then waits on the
remote side until the job is final and prints its state with the outcome files inline,
and wakes core's poller: a warm call costs two commands. Jobs without a watch (more than
:data:`MAX_WATCHES` at once, a lost connection, or attached from another process) are
polled: one remote command per round for all of them, which also carries the outcomes of
the finished ones. A map is polled even while watched: the same command counts its calls
done, failed, running (claimed by a runner task) and pending, for the progress bar. Fetch
uses what the watch or poll brought back; outcomes too large to inline come back in one
more command. Cancel kills the job's process group.
"""

from __future__ import annotations

import collections
import posixpath
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from clustrix.errors import ClustrixError
from clustrix.log import get_logger
from clustrix.plugin import dryrun
from clustrix.plugin.dryrun import DryRun
from clustrix.plugin.hookspecs import hookimpl
from clustrix.plugin.manager import transport_for
from clustrix.plugin.transport import CommandError
from clustrix.plugin.types import JobHandle, JobSpec, JobState, JobStatus, Outcome
from clustrix.remote import jobdir, runner
from clustrix.remote import scripts as remote_script
from clustrix.remote.environment.activation import RemoteEnvironment
from clustrix.remote.environment.capture import capture_environment
from clustrix.remote.environment.interpreter import RUNNER_MODULES
from clustrix.remote.environment.prepare import planned_remote_environment, prepare_remote_environment
from clustrix.remote.localcode.shipping import planned, ship
from clustrix.remote.report import run_script, unsafe_outcomes
from clustrix_ssh import scripts
from clustrix_ssh.report import Report, counted, parse_report

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig
    from clustrix.plugin.transport import Transport

log = get_logger("clustrix.ssh")

#: At most this many runner tasks per job; calls beyond it are packed into the tasks.
MAX_TASKS = 64
#: Watch commands open at once per connection (OpenSSH allows 10 sessions per connection
#: by default: the rest stay free for submits and polls). Further jobs are polled.
MAX_WATCHES = 4
#: A watch command gives up after this long and is sent again while the job runs.
WATCH_SECONDS = 120.0
#: Final jobs whose outcomes this process holds, waiting for fetch (oldest dropped first).
MAX_REMEMBERED = 1024


class SubmitError(ClustrixError):
    """The remote host did not start the job; the message carries the remote stderr."""


@attrs.frozen
class _Final:
    """A final job as a watch or poll reported it: its status and its outcome files, if inlined."""

    status: JobStatus
    files: dict[int, bytes] | None
    unsafe: tuple[str, str] | None = None  # (reason, entry) when the job's files may not be trusted


class SSHScheduler:
    """Scheduler hooks for ``cluster_type="ssh"``; the routed methods are pluggy hookimpls."""

    needs_environment = True  # the declared capabilities of clustrix.plugin.types.Scheduler
    persistent = True
    python_needs = RUNNER_MODULES
    resource_keys: Mapping[str, str] = {}

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._final: collections.OrderedDict[str, _Final] = collections.OrderedDict()
        self._watched: set[str] = set()
        self._watches_per_host: dict[int, int] = {}

    @hookimpl
    def clustrix_submit(self, spec: JobSpec, wake: Callable[[], None]) -> JobHandle:
        config: ClusterConfig = spec.config
        transport = transport_for(config)
        snapshot = spec.environment or capture_environment(config.get("replicate_distributions"))
        tasks = jobdir.plan_tasks(spec.size, MAX_TASKS)
        # code that cannot travel (a compiled extension, too large) is refused before any remote command
        # claims: idle tasks take calls others have not started, and each started call is counted as running
        payload, code = jobdir.encode_payload_and_code(spec, tasks, claim=True)
        # before anything is written remotely: a Python mismatch or a failed build stops here
        env = prepare_remote_environment(transport, config, snapshot)
        shipped = ship(transport, config, code, python=env.python, prelude=env.check_prelude())
        base_dir = transport.expand(config.get("remote_work_dir") or "~/.clustrix")
        job_dir, driver = _driver(spec, base_dir, len(tasks), env, shipped.prelude)
        driver_bytes, variables = driver.encode(), env.variables_file()
        script = scripts.render_launch(
            base_dir=base_dir, job_dir=job_dir, driver_size=len(driver_bytes), variables_size=len(variables)
        )
        result = remote_script.run_script(transport, script, driver_bytes + variables + payload)
        pgid = _parse_pgid(result.stdout)
        unsafe = remote_script.unsafe_from_stderr(result.stderr, transport.host)
        if unsafe is not None:
            raise unsafe
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
        handle = JobHandle(
            job_id=spec.job_id,
            scheduler="ssh",
            size=spec.size,
            native_id=str(pgid),
            host=transport.host,
            job_dir=job_dir,
            data={"pgid": pgid, "tasks": len(tasks), "python": env.python},
        )
        self._start_watch(transport, handle, wake)
        return handle

    @hookimpl
    def clustrix_dry_run(self, spec: JobSpec) -> DryRun:
        """The driver script and the line that starts it, worked out here as submit would; nothing connects."""
        config: ClusterConfig = spec.config
        paths = dryrun.remote_paths(config)
        snapshot = spec.environment or capture_environment(config.get("replicate_distributions"))
        tasks = jobdir.plan_tasks(spec.size, MAX_TASKS)
        _payload, code = jobdir.encode_payload_and_code(spec, tasks)
        env = planned_remote_environment(config, snapshot, paths.expand)
        base_dir = paths.expand(config.get("remote_work_dir") or "~/.clustrix")
        shipped = planned(base_dir, code)
        job_dir, driver = _driver(spec, base_dir, len(tasks), env, shipped.prelude)
        notes = [*paths.notes, *dryrun.variables_notes(env.variables)]
        if not config.get("python_executable") and snapshot.get("distributions"):
            notes.append(f"{env.python} is the replicated venv: a real submit builds it first if it is missing")
        return DryRun(
            scheduler="ssh",
            job_id=spec.job_id,
            calls=spec.size,
            tasks=len(tasks),
            script=driver,
            script_path=posixpath.join(job_dir, scripts.DRIVER),
            script_kind="driver script (no scheduler: run detached on the host)",
            commands=(f"cd {shlex.quote(job_dir)}", scripts.render_detach(job_dir)),
            notes=(
                *notes,
                f"staged first, private (0700), in one command on {config.get('cluster_host') or 'this machine'}: "
                f"the driver and {runner.PAYLOAD} in {job_dir}",
            ),
        )

    @hookimpl
    def clustrix_poll(self, handles: Sequence[JobHandle], config: ClusterConfig) -> Mapping[str, JobStatus]:
        statuses: dict[str, JobStatus] = {}
        ask: list[JobHandle] = []
        with self._lock:
            for handle in handles:
                known = self._final.get(handle.job_id)
                if known is not None:
                    statuses[handle.job_id] = known.status
                elif handle.job_id in self._watched and handle.size == 1:
                    statuses[handle.job_id] = JobStatus(state=JobState.RUNNING)  # its watch reports the end
                else:
                    ask.append(handle)  # a map is asked even while watched: its calls are counted as they go
        if ask:
            report = _run_report(transport_for(config), scripts.render_poll([_poll_item(h) for h in ask]))
            self._remember(report)
            for handle in ask:
                status = report.statuses.get(handle.job_id)
                if status is not None:
                    statuses[handle.job_id] = counted(status, report.files.get(handle.job_id), handle.size)
        return statuses

    @hookimpl
    def clustrix_fetch(self, handle: JobHandle, config: ClusterConfig) -> Sequence[Outcome | None]:
        with self._lock:
            known = self._final.pop(handle.job_id, None)
        files = None if known is None else known.files
        if known is not None and known.unsafe:
            raise unsafe_outcomes(handle, known.unsafe)
        if files is None:
            transport = transport_for(config)
            raw = hasattr(transport, "run_bytes")
            script = scripts.render_fetch(job_id=handle.job_id, job_dir=_job_dir(handle), raw=raw)
            report = _run_report(transport, script, raw=raw)
            if handle.job_id in report.unsafe:
                raise unsafe_outcomes(handle, report.unsafe[handle.job_id])
            files = report.outcomes.get(handle.job_id)
            if files is None:
                raise ClustrixError(f"fetching the outcomes of job {handle.job_id} from {transport.host} printed none")
        return [jobdir.decode_outcome(files[i]) if i in files else None for i in range(handle.size)]

    # -- watches and what they learned ------------------------------------------------

    def _start_watch(self, transport: Transport, handle: JobHandle, wake: Callable[[], None]) -> None:
        with self._lock:
            if self._watches_per_host.get(id(transport), 0) >= MAX_WATCHES:
                return  # polled instead
            self._watches_per_host[id(transport)] = self._watches_per_host.get(id(transport), 0) + 1
            self._watched.add(handle.job_id)
        thread = threading.Thread(
            target=self._watch, args=(transport, handle, wake), name=f"clustrix-ssh-watch-{handle.job_id}", daemon=True
        )
        thread.start()

    def _watch(self, transport: Transport, handle: JobHandle, wake: Callable[[], None]) -> None:
        """Send watch commands until the job is final; on any failure leave the job to the poller."""
        item = _poll_item(handle)
        try:
            while True:
                # a half-open link would otherwise block this thread until TCP gives up (~15 min)
                report = _run_report(
                    transport, scripts.render_watch(item, seconds=WATCH_SECONDS), timeout=WATCH_SECONDS + 60
                )
                status = report.statuses.get(handle.job_id)
                if status is None or not status.state.final:
                    if status is not None and status.state is JobState.RUNNING:
                        continue
                    break
                self._remember(report)
                break
        except Exception as exc:  # noqa: BLE001 - the poller takes over; it reports lasting failures
            log.debug("clustrix.ssh_watch_failed", job_id=handle.job_id, error=repr(exc))
        finally:
            with self._lock:
                self._watched.discard(handle.job_id)
                self._watches_per_host[id(transport)] -= 1
            wake()

    def _remember(self, report: Report) -> None:
        with self._lock:
            for job_id, status in report.statuses.items():
                if not status.state.final:
                    continue
                self._final[job_id] = _Final(
                    status=status, files=report.outcomes.get(job_id), unsafe=report.unsafe.get(job_id)
                )
                self._final.move_to_end(job_id)
            while len(self._final) > MAX_REMEMBERED:
                self._final.popitem(last=False)

    @hookimpl
    def clustrix_cancel(self, handle: JobHandle, config: ClusterConfig) -> bool:
        script = scripts.render_cancel(job_dir=_job_dir(handle), pgid=int(handle.data["pgid"]))
        transport = transport_for(config)
        result = remote_script.run_script(transport, script)
        if not result.ok:
            raise CommandError(result)
        return True

    @hookimpl
    def clustrix_remove_job_dir(self, handle: JobHandle, config: ClusterConfig) -> bool:
        return jobdir.remove_job_dir(transport_for(config), handle)

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


def _poll_item(handle: JobHandle) -> scripts.PollItem:
    return scripts.PollItem(
        handle.job_id, _job_dir(handle), int(handle.data["pgid"]), int(handle.data.get("tasks", handle.size))
    )


def _run_report(transport: Transport, script: str, *, raw: bool = False, timeout: float | None = None) -> Report:
    """Run one report script; raw bytes through the SSH transport, text (base64 frames) elsewhere."""
    if raw and not hasattr(transport, "run_bytes"):
        raise ValueError("raw outcome frames need a transport with run_bytes")
    _code, out, _err = run_script(transport, script, timeout=timeout)
    return parse_report(out)


__all__ = ["SSHScheduler", "SubmitError"]


def _driver(
    spec: JobSpec, base_dir: str, n_tasks: int, env: RemoteEnvironment, code_prelude: Sequence[str]
) -> tuple[str, str]:
    """The job dir and driver script of ``spec``: what submit stages and what a dry run shows.

    The driver sources the job's variables file (:data:`clustrix.remote.environment.activation.VARIABLES_FILE`):
    no value of ``environment_variables`` is in it.
    """
    job_dir = posixpath.join(base_dir, spec.job_id)
    driver = scripts.render_driver(
        python=env.python,
        job_dir=job_dir,
        n_tasks=n_tasks,
        parallel=spec.config.get("max_parallel_jobs"),
        cores=getattr(spec.resources, "cores", None),
        prelude=(*env.job_prelude(job_dir), *code_prelude),
    )
    return job_dir, driver
