"""``#PBS`` directives and ``qsub`` argv of both flavours, rendered by pure functions.

PBS Pro/OpenPBS asks for resources as ``-l select=1:ncpus=N:mem=M[:ngpus=G]`` and
runs arrays with ``-J 1-N`` (``PBS_ARRAY_INDEX``); Torque asks ``-l nodes=1:ppn=N``
and ``-l mem=M`` and runs arrays with ``-t 1-N`` (``PBS_ARRAYID``). PBS arrays are
1-based and PBS Pro refuses a one-element ``-J``, so one task is a plain job.
``-o``/``-e`` go on the ``qsub`` command line: Torque-style wrappers ignore them in
the script. Every value reaching a shell is quoted with :func:`shlex.quote`; only the
``pbs_directives`` escape hatch is taken verbatim (they are qsub options by definition).
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence
from typing import Any

import attrs

from clustrix.config.resources import Resources, check_partition_queue, format_hours
from clustrix_pbs.parse import Flavour

#: ``resources.extra`` keys this plugin understands (``@cluster(account="proj")``).
EXTRA_KEYS: dict[str, str] = {
    "account": "-A: the account (project) charged for the job",
    "job_name": "-N (default: the function's name; made safe for PBS)",
    "pbs_flavor": "'pbspro' or 'torque' (default: detected once per host with qstat --version)",
    "pbs_w": "-W options, one per item, e.g. ['group_list=proj', 'sandbox=PRIVATE']",
    "pbs_directives": "extra qsub options, one per item, e.g. ['-l place=scatter', '-m abe']",
    "place": "PBS Pro -l place=..., e.g. 'excl' or 'scatter'",
    "rerunnable": "-r y (default True) or -r n: whether PBS may rerun the job after a node failure",
    "calls_per_task": "how many calls of a map each array subjob owns (default: 1); idle subjobs steal unclaimed calls",
}

#: Job-name length each flavour accepts (Torque's classic limit is 15 characters).
NAME_LIMIT = {Flavour.PBSPRO: 236, Flavour.TORQUE: 15}


@attrs.frozen(kw_only=True)
class PBSRequest:
    """One job to render: ``n_tasks`` subjobs (1 = a plain job) asking for ``resources`` each."""

    name: str
    n_tasks: int
    resources: Resources
    flavour: Flavour
    stdout: str
    stderr: str
    max_parallel: int | None = None


def _single_line(key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip() or "\n" in value or "\r" in value:
        raise ValueError(f"{key}={value!r} is not valid: use a non-empty single-line string")
    return value


def _option_list(key: str, value: object, example: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"{key}={value!r} is not valid: use a list such as [{example!r}]")
    return [_single_line(f"{key} item", item) for item in value]


def validate_resources(resources: Resources, flavour: Flavour) -> None:
    """Raise ``ValueError`` naming the parameter for anything qsub cannot be given, before submit."""
    unknown = sorted(set(resources.extra) - set(EXTRA_KEYS))
    if unknown:
        known = ", ".join(sorted(EXTRA_KEYS))
        raise ValueError(f"PBS does not understand {', '.join(map(repr, unknown))}; its options are: {known}")
    extra = resources.extra
    for key in ("account", "job_name", "place"):
        if extra.get(key) is not None:
            _single_line(key, extra[key])
    if extra.get("place") is not None and flavour is Flavour.TORQUE:
        raise ValueError("place= is a PBS Pro option; Torque has no -l place (use pbs_directives)")
    flavor = extra.get("pbs_flavor")
    if flavor is not None and flavor not in {f.value for f in Flavour}:
        raise ValueError(f"pbs_flavor={flavor!r} is not valid: use 'pbspro' or 'torque'")
    if extra.get("rerunnable") is not None and not isinstance(extra["rerunnable"], bool):
        raise ValueError(f"rerunnable={extra['rerunnable']!r} is not valid: use True or False")
    if extra.get("pbs_w") is not None:
        for item in _option_list("pbs_w", extra["pbs_w"], "group_list=proj"):
            if item.startswith("-") or "=" not in item:
                raise ValueError(f"pbs_w item {item!r} is not valid: give 'name=value' without -W")
    if extra.get("pbs_directives") is not None:
        for item in _option_list("pbs_directives", extra["pbs_directives"], "-m abe"):
            if not item.startswith("-"):
                raise ValueError(f"pbs_directives item {item!r} is not valid: give one qsub option, e.g. '-m abe'")
    calls = extra.get("calls_per_task")
    if calls is not None and (isinstance(calls, bool) or not isinstance(calls, int) or calls < 1):
        raise ValueError(f"calls_per_task={calls!r} is not valid: use a whole number >= 1")
    check_partition_queue(resources.partition, resources.queue)


def memory_megabytes(memory: int) -> int:
    """Bytes to whole ``mb`` (PBS's mb is MiB), rounded up so a job never gets less than it asked."""
    return max(1, math.ceil(memory / 1024**2))


def safe_job_name(name: str, flavour: Flavour) -> str:
    """A name qsub accepts: letters, digits and ``_.-+``, starting with a letter, within the flavour's limit."""
    cleaned = re.sub(r"[^A-Za-z0-9_.+-]", "_", name)
    if not cleaned[:1].isalpha():
        cleaned = "c" + cleaned
    return cleaned[: NAME_LIMIT[flavour]]


def job_name(request: PBSRequest) -> str:
    return safe_job_name(str(request.resources.extra.get("job_name") or request.name or "clustrix"), request.flavour)


def resource_lists(resources: Resources, flavour: Flavour) -> list[str]:
    """The ``-l`` values: a select (PBS Pro) or nodes/mem (Torque) request, then walltime."""
    cores = resources.cores or 1
    lists: list[str] = []
    if flavour is Flavour.PBSPRO:
        chunk = f"select=1:ncpus={cores}"
        if resources.memory is not None:
            chunk += f":mem={memory_megabytes(resources.memory)}mb"
        if resources.gpus:
            chunk += f":ngpus={resources.gpus}"
        lists.append(chunk)
        if resources.extra.get("place"):
            lists.append(f"place={resources.extra['place']}")
    else:
        nodes = f"nodes=1:ppn={cores}"
        if resources.gpus:
            nodes += f":gpus={resources.gpus}"
        lists.append(nodes)
        if resources.memory is not None:
            lists.append(f"mem={memory_megabytes(resources.memory)}mb")
    if resources.time is not None:
        lists.append(f"walltime={format_hours(resources.time)}")
    return lists


def array_option(request: PBSRequest) -> list[str]:
    """``-J 1-N`` / ``-t 1-N`` (with a ``%limit`` throttle); nothing for one task: a plain job."""
    if request.n_tasks <= 1:
        return []
    spec = f"1-{request.n_tasks}"
    if request.max_parallel and request.max_parallel < request.n_tasks:
        spec += f"%{request.max_parallel}"
    return ["-J" if request.flavour is Flavour.PBSPRO else "-t", spec]


def directive_options(request: PBSRequest) -> list[list[str]]:
    """The options that go into ``#PBS`` lines, each as an argv fragment."""
    r = request.resources
    extra: dict[str, Any] = r.extra
    options = [["-N", job_name(request)]]
    queue = r.queue or r.partition
    if queue:
        options.append(["-q", queue])
    if extra.get("account"):
        options.append(["-A", extra["account"]])
    options.extend(["-l", item] for item in resource_lists(r, request.flavour))
    options.append(["-r", "y" if extra.get("rerunnable", True) else "n"])
    options.extend(["-W", item] for item in extra.get("pbs_w") or ())
    array = array_option(request)
    if array:
        options.append(array)
    return options


def directive_lines(request: PBSRequest) -> list[str]:
    """``#PBS`` lines: the rendered options (quoted), then ``pbs_directives`` verbatim."""
    validate_resources(request.resources, request.flavour)
    lines = ["#PBS " + shlex.join(option) for option in directive_options(request)]
    lines.extend(f"#PBS {item}" for item in request.resources.extra.get("pbs_directives") or ())
    return lines


def qsub_argv(request: PBSRequest, script_path: str) -> list[str]:
    """``qsub -o OUT -e ERR SCRIPT``: output paths on the command line, where every flavour honours them.

    PBS Pro's ``-f`` keeps qsub in the foreground: by default it hands the job to a background
    qsub process it leaves running per user, which outlives the (SSH) command that started it
    and sees the files and mounts of that first session only.
    """
    foreground = ["-f"] if request.flavour is Flavour.PBSPRO else []  # Torque's -f means "fault tolerant"
    return ["qsub", *foreground, "-o", request.stdout, "-e", request.stderr, script_path]
