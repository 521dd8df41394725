"""The sbatch script of a job, rendered by pure functions from resources and configuration.

Every value that reaches the script is quoted with :func:`shlex.quote` (``sbatch``
reads shell quoting in ``#SBATCH`` lines too); only ``pre_execution_commands`` and
``sbatch_directives`` are taken verbatim, because they are shell code and sbatch
options by definition.
"""

from __future__ import annotations

import math
import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from clustrix import jobdir, runner
from clustrix.resources import Resources, format_time

#: ``resources.extra`` keys this plugin understands (``@cluster(account="proj", qos="high")``).
EXTRA_KEYS: dict[str, str] = {
    "account": "--account: the account charged for the job",
    "qos": "--qos: the quality of service",
    "constraint": "--constraint: node features, e.g. 'skylake&ib'",
    "reservation": "--reservation: run inside this reservation",
    "gpu_type": "the GPU type of --gpus=TYPE:N, e.g. 'a100'",
    "exclusive": "--exclusive: True to have whole nodes",
    "requeue": "--requeue (default True) or --no-requeue",
    "job_name": "--job-name (default: the function's name)",
    "sbatch_directives": "extra sbatch options, one per item, e.g. ['--licenses=matlab:1']",
    "calls_per_task": "how many calls of a map each array task owns (default: 1); idle tasks steal unclaimed calls",
    "signal_delay": "seconds before the time limit that SLURM sends SIGUSR2 for checkpoint() (default 60; 0: never)",
}

#: ``signal_delay`` when ``time`` is set and the option is not given.
DEFAULT_SIGNAL_DELAY = 60
#: SLURM's limit for ``--signal=...@delay``.
MAX_SIGNAL_DELAY = 65535

#: Where SLURM writes a task's standard output and error inside the job directory.
STDOUT_PATTERN = "slurm-%A_%a.out"
STDERR_PATTERN = "slurm-%A_%a.err"

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def log_name(native_id: str, task: int, stream: str) -> str:
    """The file SLURM wrote for ``stream`` (``"stdout"``/``"stderr"``) of one array task."""
    return f"slurm-{native_id}_{task}.{'out' if stream == 'stdout' else 'err'}"


@attrs.frozen(kw_only=True)
class ScriptOptions:
    """The configuration keys that shape the script's body (not its resources)."""

    python: str = "python3"
    module_loads: tuple[str, ...] = ()
    conda_env_name: str | None = None
    pre_execution_commands: tuple[str, ...] = ()
    environment_variables: tuple[tuple[str, str], ...] = ()
    max_parallel_jobs: int | None = None
    #: Shell lines from environment replication (e.g. a PYTHONPATH overlay), run after the exports.
    extra_setup: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Any) -> ScriptOptions:
        get = config.get if config is not None else (lambda key, default=None: default)
        env: Mapping[str, str] = get("environment_variables") or {}
        return cls(
            python=get("python_executable") or "python3",
            module_loads=tuple(get("module_loads") or ()),
            conda_env_name=get("conda_env_name"),
            pre_execution_commands=tuple(get("pre_execution_commands") or ()),
            environment_variables=tuple((str(k), str(v)) for k, v in env.items()),
            max_parallel_jobs=get("max_parallel_jobs"),
        )


@attrs.frozen(kw_only=True)
class SbatchRequest:
    """One job array to render: ``n_tasks`` array tasks running the runner on ``job_dir``."""

    job_id: str
    name: str
    job_dir: str
    n_tasks: int
    n_calls: int
    resources: Resources
    options: ScriptOptions
    #: The runner shipped as a file into the job directory; None runs ``python -m clustrix.runner``.
    runner_path: str | None = None


def validate_resources(resources: Resources) -> None:
    """Raise ``ValueError`` naming the parameter for anything sbatch cannot be given."""
    unknown = sorted(set(resources.extra) - set(EXTRA_KEYS))
    if unknown:
        known = ", ".join(sorted(EXTRA_KEYS))
        raise ValueError(f"SLURM does not understand {', '.join(map(repr, unknown))}; its options are: {known}")
    for key in ("account", "qos", "constraint", "reservation", "gpu_type", "job_name"):
        value = resources.extra.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip() or "\n" in value):
            raise ValueError(f"{key}={value!r} is not valid: use a non-empty single-line string")
    for key in ("exclusive", "requeue"):
        value = resources.extra.get(key)
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{key}={value!r} is not valid: use True or False")
    calls = resources.extra.get("calls_per_task")
    if calls is not None and (isinstance(calls, bool) or not isinstance(calls, int) or calls < 1):
        raise ValueError(f"calls_per_task={calls!r} is not valid: use a whole number >= 1")
    delay = resources.extra.get("signal_delay")
    if delay is not None and (
        isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= MAX_SIGNAL_DELAY
    ):
        raise ValueError(f"signal_delay={delay!r} is not valid: use whole seconds from 0 to {MAX_SIGNAL_DELAY}")
    directives = resources.extra.get("sbatch_directives")
    if directives is not None:
        if isinstance(directives, str) or not isinstance(directives, Sequence):
            raise ValueError(
                f"sbatch_directives={directives!r} is not valid: use a list such as ['--licenses=matlab:1']"
            )
        for item in directives:
            if not isinstance(item, str) or not item.startswith("-") or "\n" in item:
                raise ValueError(
                    f"sbatch_directives item {item!r} is not valid: "
                    "use one sbatch option per item, e.g. '--licenses=matlab:1'"
                )
    if resources.gpus == 0 and resources.extra.get("gpu_type"):
        raise ValueError("gpu_type is set but gpus=0: ask for gpus >= 1")


def validate_options(options: ScriptOptions) -> None:
    for name, _ in options.environment_variables:
        if not _ENV_NAME.match(name):
            raise ValueError(f"environment_variables key {name!r} is not a valid shell variable name")
    for line in (*options.module_loads, *options.pre_execution_commands):
        if "\n" in line:
            raise ValueError(f"{line!r} spans several lines: give one command per list item")


def memory_megabytes(memory: int) -> int:
    """Bytes to whole MiB for ``--mem``, rounded up so a job never gets less than it asked."""
    return max(1, math.ceil(memory / 1024**2))


def job_name(request: SbatchRequest) -> str:
    name = request.resources.extra.get("job_name") or request.name or "clustrix"
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", str(name))[:64] or "clustrix"


def array_spec(n_tasks: int, max_parallel: int | None) -> str:
    spec = f"0-{n_tasks - 1}"
    if max_parallel and max_parallel < n_tasks:
        spec += f"%{max_parallel}"
    return spec


def _option(flag: str, value: object) -> str:
    return f"{flag}={shlex.quote(str(value))}"


def sbatch_options(request: SbatchRequest) -> list[str]:
    """The sbatch options of the job, each ``--flag=quoted-value``."""
    r = request.resources
    extra = r.extra
    options = [
        _option("--job-name", job_name(request)),
        _option("--output", posixpath.join(request.job_dir, STDOUT_PATTERN)),
        _option("--error", posixpath.join(request.job_dir, STDERR_PATTERN)),
        "--open-mode=append",
        _option("--array", array_spec(request.n_tasks, request.options.max_parallel_jobs)),
        "--ntasks=1",
    ]
    if r.cores is not None:
        options.append(_option("--cpus-per-task", r.cores))
    if r.memory is not None:
        options.append(_option("--mem", f"{memory_megabytes(r.memory)}M"))
    if r.time is not None:
        options.append(_option("--time", format_time(r.time)))
    partition = r.partition or r.queue
    if partition:
        options.append(_option("--partition", partition))
    for key in ("account", "qos", "constraint", "reservation"):
        if extra.get(key):
            options.append(_option(f"--{key}", extra[key]))
    if r.gpus:
        gpu_type = extra.get("gpu_type")
        options.append(_option("--gpus", f"{gpu_type}:{r.gpus}" if gpu_type else r.gpus))
    if extra.get("exclusive"):
        options.append("--exclusive")
    options.append("--requeue" if requeueable(request) else "--no-requeue")
    delay = signal_delay(request.resources)
    if delay:
        # B: signals the batch shell only, which is the runner (the script execs it)
        options.append(_option("--signal", f"B:USR2@{delay}"))
    options.extend(extra.get("sbatch_directives") or ())
    return options


def requeueable(request: SbatchRequest) -> bool:
    return bool(request.resources.extra.get("requeue", True))


def signal_delay(resources: Resources) -> int:
    """Seconds before the time limit that the runner gets SIGUSR2; 0 when there is no limit or it is off."""
    if resources.time is None:
        return 0
    delay = resources.extra.get("signal_delay")
    return int(DEFAULT_SIGNAL_DELAY if delay is None else delay)


def requeue_export_line() -> str:
    """Tells the runner how to requeue its own array task: a JSON argv (job ids are digits, JSON-safe)."""
    head, tail = '["scontrol", "requeue", "', '"]'
    task = '"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"'
    return f"export {runner.REQUEUE_ENV}={shlex.quote(head)}{task}{shlex.quote(tail)}"


def environment_lines(options: ScriptOptions) -> list[str]:
    """Module loads, conda, pre-execution commands and exports, in that order."""
    lines = [f"module load {shlex.quote(module)}" for module in options.module_loads]
    if options.conda_env_name:
        lines.append('eval "$(conda shell.bash hook)"')
        lines.append(f"conda activate {shlex.quote(options.conda_env_name)}")
    lines.extend(options.pre_execution_commands)
    lines.extend(f"export {name}={shlex.quote(value)}" for name, value in options.environment_variables)
    lines.extend(options.extra_setup)
    return lines


def runner_line(request: SbatchRequest) -> str:
    """The runner for this array task; a shipped runner file skips importing the clustrix package."""
    if request.runner_path is None:
        return jobdir.runner_shell_command(request.options.python, request.job_dir, "SLURM_ARRAY_TASK_ID")
    argv = [request.options.python, request.runner_path, request.job_dir]
    return shlex.join(argv) + ' --task "${SLURM_ARRAY_TASK_ID}"'


def render_sbatch(request: SbatchRequest) -> str:
    """The whole sbatch script: directives, environment set-up, then the runner for this array task."""
    validate_resources(request.resources)
    validate_options(request.options)
    lines = ["#!/bin/bash"]
    lines.extend(f"#SBATCH {option}" for option in sbatch_options(request))
    lines.append(f"# clustrix job {request.job_id}: {request.n_calls} call(s) in {request.n_tasks} array task(s)")
    if signal_delay(request.resources):
        # an early SIGUSR2 must not kill the shell or Python before the runner's handler is set
        lines.append("trap '' USR2")
    setup = environment_lines(request.options)
    if setup:
        lines.append("set -e")
        lines.extend(setup)
        lines.append("set +e")
    if requeueable(request):
        lines.append(requeue_export_line())
    # exec: the runner is the batch shell, so SIGUSR2 (--signal=B:...) and scancel reach Python
    lines.append(f"exec {runner_line(request)}")
    return "\n".join(lines) + "\n"
