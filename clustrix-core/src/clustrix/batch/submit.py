"""Submitting a job through a :class:`~clustrix.batch.dialect.Dialect`: the steps every remote backend shares.

:func:`submit_job` is what :meth:`clustrix.batch.engine.BatchScheduler.clustrix_submit` runs, in
this order: validate the request, check the scheduler's commands (once per connection),
capture and prepare the job's Python on the target (:mod:`clustrix.remote.environment`), plan
the tasks (:func:`tasks_for`), encode the payload and ship the user's local code
(:mod:`clustrix.remote.localcode`), plan the script (:func:`plan_submission`), then stage the job
directory and run the submit command in one remote command (:func:`stage_and_submit`).
:func:`dry_run` runs the same planning without any I/O, so what a dry run shows is what a
submit sends.
"""

from __future__ import annotations

import math
import posixpath
import secrets
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from clustrix.batch import dependencies, shell
from clustrix.batch.dialect import Dialect, ParseError, ScriptJob
from clustrix.errors import SchedulerCommandError, StagingError, SubmitRejectedError
from clustrix.log import get_logger
from clustrix.plugin import dryrun
from clustrix.plugin.types import JobHandle, JobSpec, JobState
from clustrix.remote import jobdir, runner
from clustrix.remote import scripts as remote_script
from clustrix.remote.environment.activation import VARIABLES_FILE, RemoteEnvironment, activation_from_config
from clustrix.remote.environment.capture import capture_environment
from clustrix.remote.environment.prepare import planned_remote_environment, prepare_remote_environment
from clustrix.remote.localcode.shipping import ShippedCode, planned, ship
from clustrix.remote.report import run_script_bytes

if TYPE_CHECKING:
    from clustrix.batch.engine import BatchScheduler
    from clustrix.config.settings import ClusterConfig
    from clustrix.plugin.transport import Transport

log = get_logger("clustrix.batch")

#: The runner module, shipped as a file: ``python -m clustrix.remote.runner`` would import the whole
#: clustrix package first (about 0.3 s of CPU per array task); the file needs only cloudpickle.
RUNNER_NAME = "clustrix_runner.py"
#: What the job's Python must import (the runner file needs only cloudpickle).
JOB_NEEDS = ("cloudpickle",)
#: Array tasks take each other's calls (dynamic packing), held ones too: a task held for its own
#: upstream task only (SLURM ``aftercorr``) takes another task's call once that call's inputs have
#: their outcome files, and a call it took never fails its exit code (the runner's ``_TaskRun.run``).
#: Without claims every task of a held map started Python for one call: a 100-call trivial stage took
#: 6 s instead of 1 s on the SLURM testbed (issue 21's benchmark).
CLAIMS = True
#: Submit attempts when the scheduler answers with one of the dialect's transient errors.
SUBMIT_ATTEMPTS = 4
COMMAND_TIMEOUT = 120.0


def tasks_for(size: int, calls_per_task: int | None, max_array_size: int) -> int:
    """How many array tasks a job of ``size`` calls gets: ``calls_per_task`` calls each, at most ``max_array_size``.

    With dynamic packing this is the most parallelism the job can have: tasks that start
    early steal the calls of tasks still pending, so tiny calls finish in the first few tasks.
    Every backend that packs calls into tasks asks this (the batch engine, Kubernetes).
    """
    wanted = math.ceil(size / calls_per_task) if calls_per_task else size
    return max(1, min(wanted, size, max_array_size))


def submit_job(scheduler: BatchScheduler, spec: JobSpec) -> tuple[JobHandle, Transport]:
    """Submit ``spec`` through ``scheduler``'s dialect; the handle and the transport it went through."""
    d = scheduler.dialect
    config: ClusterConfig = spec.config
    d.validate(spec.resources)
    activation_from_config(config)  # bad variable names or multi-line commands: refused here
    transport = scheduler.transport(config)
    scheduler.check_commands_before_submit(config, transport)  # before anything is built, shipped or staged
    snapshot = spec.environment or capture_environment(config.get("replicate_distributions"))
    tasks = _array_tasks(d, spec, lambda: scheduler.site(config, transport).max_array_size)
    # the user's own modules: refused if they cannot travel (before anything is written remotely); tasks
    # take each other's calls (CLAIMS: a held task takes one only once its inputs are there)
    payload, code = jobdir.encode_payload_and_code(spec, tasks, claim=CLAIMS, needs=JOB_NEEDS)
    # before anything is written remotely: a Python mismatch or a failed build stops here
    prepared = prepare_remote_environment(transport, config, snapshot, needs=JOB_NEEDS)
    shipped = ship(transport, config, code, python=prepared.python, prelude=prepared.check_prelude())
    base_dir = transport.expand(config.get("remote_work_dir") or "~/.clustrix")
    plan = plan_submission(d, spec, config, base_dir=base_dir, n_tasks=len(tasks), env=prepared, code=shipped)
    native_id = stage_and_submit(d, transport, plan, payload, prepared.variables_file())
    dependencies.record(spec, native_id)
    log.info(
        "clustrix.job_submitted",
        scheduler=d.name,
        job_id=spec.job_id,
        native_id=native_id,
        tasks=len(tasks),
        calls=spec.size,
    )
    handle = JobHandle(
        job_id=spec.job_id,
        scheduler=d.name,
        size=spec.size,
        native_id=native_id,
        host=transport.host,
        job_dir=plan.job.job_dir,
        data={
            "tasks": len(tasks),
            "script": plan.script_path,
            "submit": plan.command,  # submit: batch/retry.py
            **dependencies.handle_data(spec),
        },
    )
    return handle, transport


def _array_tasks(d: Dialect, spec: JobSpec, site_limit: Callable[[], int | None]) -> list[list[int]]:
    """The calls of each array task of ``spec``; the site's array limit (``site_limit``) is asked
    only when more tasks are wanted than the dialect's default allows."""
    per_task = d.calls_per_task(spec.resources)
    max_array = d.default_max_array_size
    if tasks_for(spec.size, per_task, spec.size) > max_array and d.site_argv() is not None:
        max_array = site_limit() or max_array
    return jobdir.plan_tasks(spec.size, tasks_for(spec.size, per_task, max_array))


def dry_run(scheduler: BatchScheduler, spec: JobSpec) -> dryrun.DryRun:
    """The script and submit command of ``spec``, by :func:`plan_submission` as a submit would; no I/O.

    Validation and pickling run as for a submit. Nothing connects: ``~`` is expanded here for a
    local scheduler and shown as :data:`clustrix.plugin.dryrun.REMOTE_HOME` for another host; the site's
    array limit is the one this process already asked, else the dialect's default.
    """
    d = scheduler.dialect
    config: ClusterConfig = spec.config
    d.validate(spec.resources)
    activation_from_config(config)
    paths = dryrun.remote_paths(config)
    snapshot = spec.environment or capture_environment(config.get("replicate_distributions"))
    prepared = planned_remote_environment(config, snapshot, paths.expand)
    notes = list(paths.notes)

    def known_limit() -> int | None:  # nothing connects: the limit this process already asked, else a note
        known = scheduler.known_site(config)
        if known is None:
            notes.append(
                f"array size limited to {d.default_max_array_size} tasks (the default): a real submit asks "
                f"the site ({shlex.join(d.site_argv() or [])}) and may use more"
            )
        return None if known is None else known.max_array_size

    tasks = _array_tasks(d, spec, known_limit)
    _payload, code = jobdir.encode_payload_and_code(spec, tasks, claim=CLAIMS, needs=JOB_NEEDS)
    base_dir = paths.expand(config.get("remote_work_dir") or "~/.clustrix")
    shipped = planned(base_dir, code)
    plan = plan_submission(d, spec, config, base_dir=base_dir, n_tasks=len(tasks), env=prepared, code=shipped)
    if not config.get("python_executable") and snapshot.get("distributions"):
        notes.append(f"{prepared.python} is the replicated venv: a real submit builds it first if it is missing")
    return dryrun.DryRun(
        scheduler=d.name,
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
    config: ClusterConfig,
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
        after=dependencies.lined_up(spec.dependencies, spec.size, n_tasks),
    )
    script_path = posixpath.join(job_dir, dialect.script_name)
    argv = dependencies.with_options(dialect, dialect.submit_argv(script_path, job), job)
    return Submission(
        job=job,
        script_path=script_path,
        command=shell.command_line(argv, dialect.command_environment(config)),
    )


def stage_and_submit(
    dialect: Dialect, transport: Transport, plan: Submission, payload: bytes, variables: bytes = b""
) -> str:
    """Stage the job directory and submit, in one remote command; the native id the dialect read back.

    ``variables`` is the job's variables file (the values of ``environment_variables``): it is
    stored 0600 next to the payload and sourced by the job script, so no value is in the script
    a scheduler spools.
    """
    d, job, submit = dialect, plan.job, plan.command
    marker = secrets.token_hex(6)
    runner_file = Path(runner.__file__).read_bytes()
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
    code, out, err = run_script_bytes(transport, script, data, timeout=COMMAND_TIMEOUT)
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
        code, out, err = run_script_bytes(transport, retry, timeout=COMMAND_TIMEOUT)
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


def _remove_refused_job_dir(transport: Transport, job: ScriptJob) -> None:
    """A job the scheduler refused leaves nothing behind: its directory (named after the job id) goes."""
    if posixpath.basename(job.job_dir.rstrip("/")) != job.job_id:
        return
    try:
        transport.run(["rm", "-rf", "--", job.job_dir], timeout=COMMAND_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - the refusal is the error to report; a leftover is only untidy
        log.warning("clustrix.cleanup_failed", job_id=job.job_id, job_dir=job.job_dir, error=repr(exc))
