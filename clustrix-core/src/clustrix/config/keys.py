"""Declared configuration keys: each key's type, default, meaning and the backends that read it.

Core declares its keys in :data:`CORE_KEYS`; a plugin declares its own by returning
:class:`ConfigKey` values from its ``clustrix_config_keys`` hook. The declared type is a
plain type expression (``str | None``, ``list[str]``, ``Literal["a", "b"]``), checked by
:func:`type_matches` wherever a value arrives (``configure()``, the config file,
``@cluster(...)``, ``CLUSTRIX_*`` variables) and shown in the generated configuration
reference (:func:`render_reference`).
"""

from __future__ import annotations

import json
import os
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Union

import attrs

#: The backends reached over a transport (SSH or the login node itself).
REMOTE = ("ssh", "slurm", "pbs", "sge")
#: Every backend that runs the call outside this Python process's machine-local pool.
NOT_LOCAL = (*REMOTE, "kubernetes")
_NONE_TYPE = type(None)
#: A file or folder name: a string, or a ``pathlib.Path`` (stored as its string).
PATH = str | os.PathLike


@attrs.frozen(kw_only=True)
class ConfigKey:
    """One configuration key: its default, its type, what it does, and which backends read it.

    ``backends`` names the ``cluster_type`` values that read the key; empty means every backend.
    ``connection`` marks a key that says how the scheduler's host is reached (a key file, a
    host-key policy): jobs whose values differ never share a connection or a poll query
    (:attr:`clustrix.config.settings.ClusterConfig.connection_key`). ``single_line`` marks a key
    whose value ends up in a line of a shell or batch script: a line break (or NUL) in it is refused.
    """

    default: Any
    type: Any
    help: str
    backends: tuple[str, ...] = ()
    connection: bool = False
    single_line: bool = False


def from_default(default: Any) -> ConfigKey:
    """A key a plugin declared by its default alone (the older form of the hook): its type is the default's."""
    if default is None:
        kind: Any = Any
    elif isinstance(default, list):
        kind = list[Any]
    elif isinstance(default, dict):
        kind = dict[str, Any]
    else:
        kind = type(default)
    return ConfigKey(default=default, type=kind, help="")


def members(kind: Any) -> tuple[Any, ...]:
    """The alternatives of a union type (``str | None`` -> ``(str, NoneType)``); any other type alone."""
    if typing.get_origin(kind) in (Union, types.UnionType):
        return tuple(m for arg in typing.get_args(kind) for m in members(arg))
    return (kind,)


def type_matches(value: Any, kind: Any) -> bool:
    """Whether ``value`` is of the declared type ``kind`` (an int is a float; a bool is neither)."""
    origin = typing.get_origin(kind)
    if kind is Any or kind is object:
        return True
    if origin in (Union, types.UnionType):
        return any(type_matches(value, m) for m in typing.get_args(kind))
    if kind is None or kind is _NONE_TYPE:
        return value is None
    if origin is Literal:
        return any(value == choice and type(value) is type(choice) for choice in typing.get_args(kind))
    if origin in (list, tuple):
        (item,) = typing.get_args(kind)[:1] or (Any,)
        return isinstance(value, (list, tuple)) and all(type_matches(v, item) for v in value)
    if origin is dict:
        key, item = typing.get_args(kind) or (Any, Any)
        return isinstance(value, Mapping) and all(
            type_matches(k, key) and type_matches(v, item) for k, v in value.items()
        )
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def mismatch(value: Any, kind: Any) -> str:
    """Why ``value`` is not of the declared type ``kind``: ``"takes int | None, not str"``."""
    near = {type(c) for m in members(kind) if typing.get_origin(m) is Literal for c in typing.get_args(m)}
    return f"takes {type_text(kind)}" + ("" if type(value) in near else f", not {type(value).__name__}")


def type_text(kind: Any) -> str:
    """The declared type as users read it: ``str | None``, ``list[str]``, ``"auto" | "thread"``."""
    origin = typing.get_origin(kind)
    if kind is Any or kind is object:
        return "any"
    if origin in (Union, types.UnionType):
        return " | ".join(type_text(m) for m in members(kind))
    if kind is None or kind is _NONE_TYPE:
        return "None"
    if origin is Literal:
        return " | ".join(repr(choice) for choice in typing.get_args(kind))
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(type_text(a) for a in typing.get_args(kind))}]"
    return str(getattr(kind, "__name__", kind))


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def from_text(text: str, kind: Any) -> Any:
    """A ``CLUSTRIX_<KEY>`` variable's text as a value of the declared type; ``ValueError`` if it is none.

    Lists and mappings are JSON (a list also takes ``a,b``); otherwise text stays text where
    the type takes a string, else it is read as a boolean word, ``none``/``auto``/empty for
    None, or a number.
    """
    kinds = members(kind)
    origins = {typing.get_origin(k) or k for k in kinds}
    stripped = text.strip()
    if Any in kinds or object in kinds:
        return text
    if origins & {list, tuple, dict}:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            if origins & {list, tuple}:
                return [part.strip() for part in text.split(",") if part.strip()]
    if str in kinds:
        return text
    for k in kinds:
        if typing.get_origin(k) is Literal and text in typing.get_args(k):
            return text
    if bool in kinds and stripped.lower() in _TRUE | _FALSE:
        return stripped.lower() in _TRUE
    if _NONE_TYPE in kinds and stripped.lower() in {"", "none", "auto"}:
        return None
    if int in kinds:
        try:
            return int(stripped)
        except ValueError:
            pass
    if float in kinds:
        try:
            return float(stripped)
        except ValueError:
            pass
    raise ValueError(f"{type_text(kind)}" + (" (lists and mappings as JSON)" if origins & {list, dict} else ""))


_CONNECTION = "the SSH connection to `cluster_host` (ssh, and slurm/pbs/sge over SSH)"

#: Core's keys (the original clustrix keys and the ones core added). Plugins add theirs.
CORE_KEYS: dict[str, ConfigKey] = {
    "cluster_type": ConfigKey(
        default="local",
        type=str,
        help="the scheduler: `local`, `ssh`, `slurm`, `pbs` (or `torque`), `sge`, `kubernetes`, or a third-party "
        "plugin's name (each needs its distribution installed; `clustrix plugins` lists what is)",
    ),
    "cluster_host": ConfigKey(
        default=None,
        type=str | None,
        help="login node or SSH host (an `~/.ssh/config` alias works); empty means this machine",
        backends=REMOTE,
        connection=True,
        single_line=True,
    ),
    "cluster_port": ConfigKey(default=22, type=int, help="SSH port", backends=REMOTE, connection=True),
    "username": ConfigKey(
        default=None,
        type=str | None,
        help="remote user (else `~/.ssh/config`, else the local user)",
        backends=REMOTE,
        connection=True,
        single_line=True,
    ),
    "key_file": ConfigKey(
        default=None,
        type=PATH | None,
        help="private key file for " + _CONNECTION,
        backends=REMOTE,
        connection=True,
        single_line=True,
    ),
    "password": ConfigKey(
        default=None,
        type=str | None,
        help="only used when set explicitly; never stored or printed",
        backends=REMOTE,
    ),
    "remote_work_dir": ConfigKey(
        default="~/.clustrix",
        type=PATH,
        help="where private (0700) job directories are made on the target",
        backends=REMOTE,
        single_line=True,
    ),
    "python_executable": ConfigKey(
        default=None,
        type=PATH | None,
        help="remote Python; default: the replicated environment, else `python3` (`python` in a pod); a leading "
        "`~` is expanded on the remote side",
        backends=NOT_LOCAL,
        single_line=True,
    ),
    "conda_env_name": ConfigKey(
        default=None,
        type=str | None,
        help="conda environment to activate remotely",
        backends=REMOTE,
        single_line=True,
    ),
    "module_loads": ConfigKey(
        default=[],
        type=list[str] | str,
        help="environment modules to load (`module load ...`); a string is one module",
        backends=REMOTE,
        single_line=True,
    ),
    "pre_execution_commands": ConfigKey(
        default=[],
        type=list[str] | str,
        help="shell lines run before the call; a string is one line",
        backends=NOT_LOCAL,
        single_line=True,
    ),
    "environment_variables": ConfigKey(
        default={},
        type=dict[str, str | int | float],
        help="variables set for the job (numbers become text)",
        backends=NOT_LOCAL,
    ),
    "default_cores": ConfigKey(
        default=None, type=int | None, help="cores for functions that do not give their own `cores=`"
    ),
    "default_memory": ConfigKey(
        default=None,
        type=str | int | None,
        help='memory for functions that do not give their own `memory=` (`"32GB"`; an int is bytes)',
        backends=NOT_LOCAL,
    ),
    "default_time": ConfigKey(
        default=None,
        type=str | int | float | None,
        help='wall time for functions that do not give their own `time=` (`"04:00:00"`; a number is minutes)',
        backends=NOT_LOCAL,
    ),
    "default_partition": ConfigKey(
        default=None,
        type=str | None,
        help="partition for functions that do not give their own `partition=`",
        backends=("slurm",),
        single_line=True,
    ),
    "default_queue": ConfigKey(
        default=None,
        type=str | None,
        help="queue for functions that do not give their own `queue=`",
        backends=("pbs", "sge"),
        single_line=True,
    ),
    "job_poll_interval": ConfigKey(
        default=1.0,
        type=float,
        help="the longest pause between status queries (seconds); polling starts at 50 ms and backs off to it",
        backends=NOT_LOCAL,
    ),
    "max_parallel_jobs": ConfigKey(
        default=None,
        type=int | None,
        help="how many calls of a `.map()` run at once (`%N` of a job array; pods on Kubernetes)",
        backends=NOT_LOCAL,
    ),
    "retries": ConfigKey(
        default=0,
        type=int,
        help="run a call again, up to this many times, when it raises (in its own task, at once) or is lost "
        "(its task killed, its node failed: only that call is resubmitted); `clustrix retry JOB` reruns the "
        "failed calls of a finished job (docs/remote-jobs.md)",
    ),
    "cleanup_on_success": ConfigKey(
        default=False,
        type=bool,
        help="delete a job's remote directory once every call's result has been fetched into a live future "
        "(then `Job.attach` can no longer fetch it); off so results stay fetchable",
        backends=NOT_LOCAL,
    ),
    "progress": ConfigKey(
        default=None,
        type=bool | None,
        help="the progress bar of `.map()` and `Executor.map`: `None` shows it where stdout is a terminal or a "
        "Jupyter notebook, `False` never (`CLUSTRIX_PROGRESS=0`), `True` always",
    ),
    "executor": ConfigKey(
        default="auto",
        type=Literal["auto", "process", "thread"],
        help="how the local backend runs calls: worker processes, threads, or `auto` (processes when the "
        "function pickles)",
        backends=("local",),
    ),
    "max_workers": ConfigKey(
        default=None,
        type=int | None,
        help="local backend: worker count (default: the cores you may use)",
        backends=("local",),
    ),
    "nested_calls": ConfigKey(
        default="inline",
        type=Literal["inline", "submit"],
        help="a decorated function called inside a running call (a local worker, a job): `inline` runs it "
        "there, `submit` submits it as configured (docs/local.md)",
    ),
    "allow_python_mismatch": ConfigKey(
        default=False,
        type=bool,
        help="allow a remote Python of another major.minor than the local one",
        backends=REMOTE,
    ),
    "replicate_distributions": ConfigKey(
        default=None,
        type=list[str] | str | None,
        help='limit the replicated remote environment to these distributions and their requirements ("numpy, '
        'attrs" also works); clustrix-core and cloudpickle are always included',
        backends=NOT_LOCAL,
        single_line=True,
    ),
    "remote_index": ConfigKey(
        default="auto",
        type=Literal["auto", "none", "reachable"],
        help="whether the remote side reaches a package index when it builds the replicated venv: `auto` probes "
        "once per host, `none` ships wheels downloaded here (no index there), `reachable` installs from the "
        "index there (docs/ssh.md, sites whose cluster cannot reach PyPI)",
        backends=REMOTE,
    ),
    "pip_index_url": ConfigKey(
        default=None,
        type=str | None,
        help="the package index (a site mirror or proxy) pip and uv use: there when the remote side reaches it, "
        "here when clustrix downloads wheels to ship",
        backends=REMOTE,
        single_line=True,
    ),
    "pip_extra_index_url": ConfigKey(
        default=[],
        type=list[str] | str,
        help="more package indexes, used like pip_index_url",
        backends=REMOTE,
        single_line=True,
    ),
    "pip_trusted_host": ConfigKey(
        default=[],
        type=list[str] | str,
        help="index hosts pip may reach without a valid certificate (pip's --trusted-host)",
        backends=REMOTE,
        single_line=True,
    ),
    "ship_modules": ConfigKey(
        default=[],
        type=list[str] | str,
        help="local modules to ship although no payload names them (e.g. imported from a string)",
        backends=NOT_LOCAL,
    ),
    "exclude_modules": ConfigKey(
        default=[],
        type=list[str] | str,
        help="local modules never shipped: the remote side has its own copy",
        backends=NOT_LOCAL,
    ),
    "max_module_size": ConfigKey(
        default="20MB",
        type=str | int,
        help="the largest local module or package shipped with a call; a bigger one is refused before submit",
        backends=NOT_LOCAL,
    ),
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default_text(value: Any) -> str:
    return "`None`" if value is None else f"`{json.dumps(value)}`"


def render_table(keys: Mapping[str, ConfigKey]) -> list[str]:
    """Markdown table rows of ``keys``: name, type, default, backends, meaning."""
    lines = ["| key | type | default | read by | what it does |", "|---|---|---|---|---|"]
    for name, key in keys.items():
        backends = ", ".join(key.backends) if key.backends else "every backend"
        lines.append(
            f"| `{name}` | `{_cell(type_text(key.type))}` | {_cell(_default_text(key.default))} | {backends} "
            f"| {_cell(key.help) or '-'} |"
        )
    return lines


REFERENCE_HEADER = """\
# Configuration reference

<!-- generated from the declared keys by clustrix.config.settings.reference_page(); do not edit by hand:
     python scripts/config_reference.py (with every clustrix distribution installed) writes this page -->

Every configuration key, with its type, default, the backends that read it and what it does.
Core declares its keys; each plugin declares its own through the `clustrix_config_keys` hook,
so a key is known once its distribution is installed. A value of the wrong type is refused
naming the key, the type and where it came from ({doc}`configuration` explains the layers:
file, profiles, `configure()`, `@cluster(...)`, `CLUSTRIX_<KEY>` variables).
"""


def render_reference(sections: Iterable[tuple[str, Mapping[str, ConfigKey]]]) -> str:
    """The configuration reference page: one table per distribution that declares keys."""
    parts = [REFERENCE_HEADER]
    for title, keys in sections:
        if keys:
            parts.append(f"\n## {title}\n\n" + "\n".join(render_table(keys)) + "\n")
    return "".join(parts)
