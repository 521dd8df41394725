"""Grid Engine's ``#$`` directives, rendered by pure functions from the job, its resources and the site options.

Every value is quoted with :func:`shlex.quote` (``qsub`` reads shell quoting in ``#$``
lines, as tested on Son of Grid Engine 8.1.9); only ``sge_directives`` are taken
verbatim, because they are qsub options by definition. The rest of the script is the
engine's (:meth:`clustrix.batch.dialect.Dialect.render_script`).
"""

from __future__ import annotations

import math
import posixpath
import re
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from clustrix.batch.dialect import ScriptJob
from clustrix.config.resources import Resources, format_hours

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig

#: ``resources.extra`` keys this plugin understands (``@cluster(project="genomics")``).
EXTRA_KEYS: dict[str, str] = {
    "project": "-P: the project the job runs under (it must exist: qconf -sprjl)",
    "account": "-A: the account string written to the accounting record",
    "pe": "the parallel environment of -pe PE N for cores > 1 (default: the sge_pe setting, 'smp')",
    "memory_resources": "the complexes given the per-slot memory, e.g. ['h_vmem', 'mem_free'] "
    "(default: the sge_memory_resources setting, ['h_vmem'])",
    "requeue": "-r y with -notify (default True): rerunnable, SIGUSR2 before a kill for checkpoint(); False: -r n",
    "job_name": "-N (default: the function's name, made safe)",
    "sge_directives": "extra qsub options, one per item, e.g. ['-l scratch=10G', '-m ea']",
    "calls_per_task": "how many calls of a map each array task owns (default: 1); idle tasks steal unclaimed calls",
}

#: Site settings (configuration keys) and their defaults: :func:`SiteOptions.from_config` reads them.
CONFIG_KEYS: dict[str, Any] = {
    # the parallel environment that gives one job several slots on one host
    "sge_pe": "smp",
    # the complexes that get the per-slot memory (h_vmem is the limit the execd enforces)
    "sge_memory_resources": ["h_vmem"],
}

#: Where Grid Engine writes a task's standard output and error inside the job directory
#: (``$JOB_ID`` and ``$TASK_ID`` are expanded by Grid Engine, not by a shell).
STDOUT_PATTERN = "sge-$JOB_ID.$TASK_ID.out"
STDERR_PATTERN = "sge-$JOB_ID.$TASK_ID.err"

#: Names qsub takes without complaint: a project, account, PE or complex with a space or a
#: comma is refused by qmaster with the misleading "Error reading answer list from qmaster".
_NAME = re.compile(r"^[A-Za-z0-9_.@+-]+$")
_COMPLEX = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def log_name(native_id: str, task: int, stream: str) -> str:
    """The file Grid Engine wrote for ``stream`` (``"stdout"``/``"stderr"``) of one (1-based) array task."""
    return f"sge-{native_id}.{task}.{'out' if stream == 'stdout' else 'err'}"


@attrs.frozen(kw_only=True)
class SiteOptions:
    """The site's settings for the directives: the PE name and the memory complexes."""

    pe: str = CONFIG_KEYS["sge_pe"]
    memory_resources: tuple[str, ...] = tuple(CONFIG_KEYS["sge_memory_resources"])

    @classmethod
    def from_config(cls, config: ClusterConfig | None) -> SiteOptions:
        get = config.get if config is not None else (lambda key, default=None: default)
        pe = get("sge_pe") or CONFIG_KEYS["sge_pe"]
        memory = get("sge_memory_resources") or CONFIG_KEYS["sge_memory_resources"]
        memory = tuple([memory] if isinstance(memory, str) else memory)
        _check_name("sge_pe", pe)
        _check_complexes("sge_memory_resources", memory)
        return cls(pe=pe, memory_resources=memory)


def _check_name(key: str, value: object) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(
            f"{key}={value!r} is not valid: use a Grid Engine name of letters, digits and _.@+- "
            "(no spaces, commas or quotes)"
        )


def _check_complexes(key: str, value: object) -> None:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"{key}={value!r} is not valid: use a list of complex names, e.g. ['h_vmem', 'mem_free']")
    for item in value:
        if not isinstance(item, str) or not _COMPLEX.match(item):
            raise ValueError(f"{key} item {item!r} is not valid: use a complex name such as 'h_vmem'")


def validate_extras(resources: Resources) -> None:
    """Raise ``ValueError`` naming the parameter for a declared extra qsub cannot be given (pure)."""
    extra = resources.extra
    for key in ("project", "account", "pe"):
        if extra.get(key) is not None:
            _check_name(key, extra[key])
    name = extra.get("job_name")
    if name is not None and (not isinstance(name, str) or not name.strip() or "\n" in name):
        raise ValueError(f"job_name={name!r} is not valid: use a non-empty single-line string")
    if extra.get("memory_resources") is not None:
        _check_complexes("memory_resources", extra["memory_resources"])
    requeue = extra.get("requeue")
    if requeue is not None and not isinstance(requeue, bool):
        raise ValueError(f"requeue={requeue!r} is not valid: use True or False")
    directives = extra.get("sge_directives")
    if directives is not None:
        if isinstance(directives, str) or not isinstance(directives, Sequence):
            raise ValueError(f"sge_directives={directives!r} is not valid: use a list such as ['-l scratch=10G']")
        for item in directives:
            if not isinstance(item, str) or not item.startswith("-") or "\n" in item:
                raise ValueError(
                    f"sge_directives item {item!r} is not valid: use one qsub option per item, e.g. '-l scratch=10G'"
                )
    for key in ("partition", "queue"):
        value = getattr(resources, key)
        if value is not None and not re.match(r"^[A-Za-z0-9_.@*,+-]+$", value):
            raise ValueError(f"{key}={value!r} is not valid: use a queue name such as 'all.q' (no spaces)")


def check_job_dir(job_dir: str) -> None:
    """Grid Engine reads ``[host:]path`` and expands ``$NAME`` in ``-o``/``-e``/``-wd`` paths: refuse both."""
    if ":" in job_dir or "$" in job_dir:
        raise ValueError(
            f"remote_work_dir gives the job directory {job_dir!r}: Grid Engine reads ':' as a host name "
            "and '$' as a variable in output paths; choose a remote_work_dir without ':' or '$'"
        )


def slots(resources: Resources) -> int:
    return max(1, resources.cores or 1)


def per_slot_megabytes(memory: int, n_slots: int) -> int:
    """The job's total memory (bytes) split over its slots, in whole MiB, rounded up (never less than asked)."""
    return max(1, math.ceil(memory / n_slots / 1024**2))


def format_h_rt(seconds: int) -> str:
    """``h_rt`` as ``H:MM:SS`` (Grid Engine reads hours beyond 24, not a day prefix)."""
    return format_hours(seconds, width=1)


def array_spec(n_tasks: int) -> str:
    """Always an array, even of one: ``$SGE_TASK_ID`` is then 1, never ``undefined``."""
    return f"1-{n_tasks}"


def requeueable(resources: Resources) -> bool:
    return resources.extra.get("requeue", True) is not False


def qsub_options(job: ScriptJob, name: str, site: SiteOptions) -> list[str]:
    """The qsub options of the job, each ``-flag quoted-value`` (one directive line each)."""
    check_job_dir(job.job_dir)
    r = job.resources
    extra = r.extra

    def option(flag: str, *values: object) -> str:
        return " ".join([flag, *(shlex.quote(str(v)) for v in values)])

    options = [
        option("-N", name),
        option("-S", "/bin/bash"),
        option("-wd", job.job_dir),
        option("-o", posixpath.join(job.job_dir, STDOUT_PATTERN)),
        option("-e", posixpath.join(job.job_dir, STDERR_PATTERN)),
        option("-t", array_spec(job.n_tasks)),
        "-w e",
    ]
    if job.max_parallel and job.max_parallel < job.n_tasks:
        options.append(option("-tc", job.max_parallel))
    n_slots = slots(r)
    if n_slots > 1:
        options.append(option("-pe", extra.get("pe") or site.pe, n_slots))
    if r.memory is not None:
        per_slot = per_slot_megabytes(r.memory, n_slots)
        for complex_name in extra.get("memory_resources") or site.memory_resources:
            options.append(option("-l", f"{complex_name}={per_slot}M"))
    if r.time is not None:
        options.append(option("-l", f"h_rt={format_h_rt(r.time)}"))
    queue = r.queue or r.partition
    if queue:
        options.append(option("-q", queue))
    if extra.get("project"):
        options.append(option("-P", extra["project"]))
    if extra.get("account"):
        options.append(option("-A", extra["account"]))
    if requeueable(r):
        # rerunnable (qmod -rj may requeue it), and SIGUSR2 the queue's notify time before a kill
        options += ["-r y", "-notify"]
    else:
        options.append("-r n")
    options.extend(extra.get("sge_directives") or ())
    return options
