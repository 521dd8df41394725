"""SLURM's ``#SBATCH`` options, rendered by pure functions from the job and its resources.

Every value is quoted with :func:`shlex.quote` (``sbatch`` reads shell quoting in
``#SBATCH`` lines too); only ``sbatch_directives`` are taken verbatim, because they are
sbatch options by definition. The rest of the script is the engine's
(:meth:`clustrix.batch.dialect.Dialect.render_script`).
"""

from __future__ import annotations

import math
import posixpath
import shlex
from collections.abc import Sequence

from clustrix.batch.dialect import ScriptJob
from clustrix.config.resources import Resources, format_time

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


def log_name(native_id: str, task: int, stream: str) -> str:
    """The file SLURM wrote for ``stream`` (``"stdout"``/``"stderr"``) of one array task."""
    return f"slurm-{native_id}_{task}.{'out' if stream == 'stdout' else 'err'}"


def validate_extras(resources: Resources) -> None:
    """Raise ``ValueError`` naming the parameter for a declared extra sbatch cannot be given (pure)."""
    for key in ("account", "qos", "constraint", "reservation", "gpu_type", "job_name"):
        value = resources.extra.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip() or "\n" in value):
            raise ValueError(f"{key}={value!r} is not valid: use a non-empty single-line string")
    for key in ("exclusive", "requeue"):
        value = resources.extra.get(key)
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{key}={value!r} is not valid: use True or False")
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


def memory_megabytes(memory: int) -> int:
    """Bytes to whole MiB for ``--mem``, rounded up so a job never gets less than it asked."""
    return max(1, math.ceil(memory / 1024**2))


def array_spec(n_tasks: int, max_parallel: int | None) -> str:
    spec = f"0-{n_tasks - 1}"
    if max_parallel and max_parallel < n_tasks:
        spec += f"%{max_parallel}"
    return spec


def _option(flag: str, value: object) -> str:
    return f"{flag}={shlex.quote(str(value))}"


def sbatch_options(job: ScriptJob, job_name: str) -> list[str]:
    """The sbatch options of the job, each ``--flag=quoted-value``."""
    r = job.resources
    extra = r.extra
    options = [
        _option("--job-name", job_name),
        _option("--output", posixpath.join(job.job_dir, STDOUT_PATTERN)),
        _option("--error", posixpath.join(job.job_dir, STDERR_PATTERN)),
        "--open-mode=append",
        _option("--array", array_spec(job.n_tasks, job.max_parallel)),
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
    options.append("--requeue" if requeueable(r) else "--no-requeue")
    delay = signal_delay(r)
    if delay:
        # B: signals the batch shell only, which is the runner (the script execs it)
        options.append(_option("--signal", f"B:USR2@{delay}"))
    options.extend(extra.get("sbatch_directives") or ())
    return options


def requeueable(resources: Resources) -> bool:
    return bool(resources.extra.get("requeue", True))


def signal_delay(resources: Resources) -> int:
    """Seconds before the time limit that the runner gets SIGUSR2; 0 when there is no limit or it is off."""
    if resources.time is None:
        return 0
    delay = resources.extra.get("signal_delay")
    return int(DEFAULT_SIGNAL_DELAY if delay is None else delay)
