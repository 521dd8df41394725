"""Configuration: ``configure()``, ``get_config()``, TOML profiles and ``CLUSTRIX_*`` overrides.

Layers, later wins:

1. built-in defaults (and defaults declared by plugins through ``clustrix_config_keys``);
2. the config file's top-level keys
   (``platformdirs.user_config_dir("clustrix")/config.toml``, or ``$CLUSTRIX_CONFIG``);
3. ``configure(...)`` calls in this process;
4. the selected profile's table ``[profiles.NAME]`` (``configure(profile=...)``,
   ``@cluster(profile=...)`` or ``$CLUSTRIX_PROFILE``);
5. ``CLUSTRIX_<KEY>`` environment variables (``CLUSTRIX_CLUSTER_TYPE=local``).

A function's own ``@cluster(profile=...)`` replaces the process-wide profile for that
function only.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import platformdirs

from clustrix.errors import ConfigurationError, SchedulerNotFoundError, did_you_mean
from clustrix.resources import Resources, parse_memory

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: The original clustrix keys and their defaults. Scheduler-specific keys (``namespace``,
#: ``image``, ``kubeconfig``, ...) are declared by their plugins through ``clustrix_config_keys``.
CORE_DEFAULTS: dict[str, Any] = {
    "cluster_type": "local",
    "cluster_host": None,
    "cluster_port": 22,
    "username": None,
    "key_file": None,
    "password": None,
    "remote_work_dir": "~/.clustrix",
    "python_executable": None,
    "conda_env_name": None,
    "module_loads": [],
    "pre_execution_commands": [],
    "environment_variables": {},
    "default_cores": None,
    "default_memory": None,
    "default_time": None,
    "default_partition": None,
    "default_queue": None,
    "job_poll_interval": 1.0,
    "max_parallel_jobs": None,
    "cleanup_on_success": False,
    # the progress bar of .map(): None shows it where stdout is a terminal or a notebook
    "progress": None,
    # local executor
    "executor": "auto",
    "max_workers": None,
    # a decorated function called inside a running call (a local worker, a job): "inline" runs it
    # there, "submit" submits it as configured (docs/local.md, "Decorated functions that call decorated functions")
    "nested_calls": "inline",
    # ssh
    "known_hosts_file": None,
    "host_key_policy": "reject",
    "forward_agent": False,
    "allow_python_mismatch": False,
    # environment replication: limit the remote venv to these distributions (and their requirements)
    "replicate_distributions": None,
    # the user's own code (clustrix.localcode): extra local modules to ship, local modules the
    # remote side already has, and the largest module or package shipped
    "ship_modules": [],
    "exclude_modules": [],
    "max_module_size": "20MB",
}

_LIST_KEYS = {"module_loads", "pre_execution_commands", "ship_modules", "exclude_modules"}
_CHOICES = {
    "executor": ("auto", "process", "thread"),
    "nested_calls": ("inline", "submit"),
    "host_key_policy": ("reject", "accept-new"),
}
_secret_keys = {"password"}
#: Keys whose value ends up in a line of a shell or batch script (``#SBATCH --partition=...``,
#: ``cd``, ``module load``, ...): a newline there would start a new line of the script.
_SINGLE_LINE_KEYS = {
    "cluster_host", "username", "key_file", "remote_work_dir", "python_executable", "conda_env_name",
    "default_partition", "default_queue", "known_hosts_file",
    "module_loads", "pre_execution_commands", "replicate_distributions",
}  # fmt: skip
REDACTED = "<redacted>"


def config_path() -> Path:
    """Where the TOML config file is read from."""
    override = os.environ.get("CLUSTRIX_CONFIG")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir("clustrix")) / "config.toml"


def known_keys() -> dict[str, Any]:
    """Core keys plus those declared by installed plugins, with their defaults."""
    from clustrix.plugins import plugin_config_keys

    return {**CORE_DEFAULTS, **plugin_config_keys()}


@attrs.frozen(repr=False)
class ClusterConfig:
    """A resolved configuration. Read keys as attributes: ``config.cluster_type``.

    Its ``repr`` shows neither the ``password`` nor the values of ``environment_variables``
    (only their names), so neither reaches a log or a traceback.
    """

    values: Mapping[str, Any]
    profile: str | None = None

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__") or key in {"values", "profile"}:
            raise AttributeError(key)
        try:
            return self.values[key]
        except KeyError:
            raise AttributeError(f"unknown configuration key {key!r}") from None

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def __repr__(self) -> str:
        shown = {k: REDACTED if k in _secret_keys and v is not None else v for k, v in self.values.items()}
        if shown.get("environment_variables"):
            shown["environment_variables"] = {name: REDACTED for name in shown["environment_variables"]}
        return f"ClusterConfig(values={shown!r}, profile={self.profile!r})"

    def as_dict(self, *, include_secrets: bool = False) -> dict[str, Any]:
        """A JSON-friendly copy; secrets are left out unless asked for."""
        return {k: v for k, v in self.values.items() if include_secrets or k not in _secret_keys}

    @property
    def default_resources(self) -> Resources:
        return Resources.parse(
            cores=self.values.get("default_cores"),
            memory=self.values.get("default_memory"),
            time=self.values.get("default_time"),
            partition=self.values.get("default_partition"),
            queue=self.values.get("default_queue"),
            parameter_prefix="default_",
        )

    @property
    def connection_key(self) -> tuple[Any, ...]:
        """Jobs with the same key share a connection and a poll query."""
        return (
            self.values.get("cluster_type"),
            self.values.get("cluster_host"),
            self.values.get("cluster_port"),
            self.values.get("username"),
        )


def _check_single_line(key: str, value: Any) -> None:
    """Refuse a newline (or NUL) in a value that becomes part of a script line."""
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if isinstance(item, str) and any(c in item for c in "\n\r\0"):
            what = f"an item of {key}" if item is not value else key
            raise ConfigurationError(
                f"{what}={item!r} is not valid: it contains a line break (or NUL), and it ends up in a line of a "
                f"shell or batch script, where a line break would start a new command; "
                + ("give one command per list item" if isinstance(value, (list, tuple)) else "use a single line")
            )


def _convert(key: str, value: Any, default: Any) -> Any:
    """Coerce and check one value; raise ``ConfigurationError`` naming the key."""
    if key in _SINGLE_LINE_KEYS:
        _check_single_line(key, value)
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigurationError(f"{key}={value!r} is not valid: use one of {', '.join(map(repr, _CHOICES[key]))}")
    if key in _LIST_KEYS:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigurationError(
                f"{key}={value!r} is not valid: use a list of strings, e.g. {key}=['module load gcc']"
            )
        return list(value)
    if key == "replicate_distributions" and value is not None:
        if isinstance(value, str):  # "numpy, attrs" (also how CLUSTRIX_REPLICATE_DISTRIBUTIONS arrives)
            value = [part.strip() for part in value.split(",")]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigurationError(
                f"{key}={value!r} is not valid: use a list of distribution names, e.g. {key}=['numpy', 'attrs']"
            )
        return [v for v in value if v]
    if key == "max_module_size":
        try:
            parse_memory(value, parameter="max_module_size")
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        return value
    if key == "environment_variables":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ConfigurationError(
                f"{key}={value!r} is not valid: use a mapping, e.g. {key}={{'OMP_NUM_THREADS': '4'}}"
            )
        return {k: str(v) for k, v in value.items()}
    if key == "cluster_port" and (isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536):
        raise ConfigurationError(f"cluster_port={value!r} is not valid: use a TCP port number, e.g. cluster_port=22")
    if key == "job_poll_interval" and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
        raise ConfigurationError(f"job_poll_interval={value!r} is not valid: use a positive number of seconds, e.g. 5")
    if (
        key in {"max_parallel_jobs", "max_workers"}
        and value is not None
        and (isinstance(value, bool) or not isinstance(value, int) or value < 1)
    ):
        raise ConfigurationError(f"{key}={value!r} is not valid: use a whole number >= 1, or None")
    if key == "progress":
        if isinstance(value, str):  # CLUSTRIX_PROGRESS=0
            lowered = value.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            if lowered in {"", "auto"}:
                return None
        if value is not None and not isinstance(value, bool):
            raise ConfigurationError(f"progress={value!r} is not valid: use True, False or None (automatic)")
        return value
    if key == "cluster_type" and (not isinstance(value, str) or not value):
        raise ConfigurationError(
            f"cluster_type={value!r} is not valid: use a scheduler name such as 'local' or 'slurm'"
        )
    return value


def _from_environment_text(key: str, text: str, default: Any) -> Any:
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off", ""}:
            return False
        raise ConfigurationError(f"CLUSTRIX_{key.upper()}={text!r} is not valid: use true or false")
    if isinstance(default, int) and not isinstance(default, bool):
        try:
            return int(text)
        except ValueError:
            raise ConfigurationError(f"CLUSTRIX_{key.upper()}={text!r} is not valid: use a whole number") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigurationError(f"CLUSTRIX_{key.upper()}={text!r} is not valid: use a number") from None
    if isinstance(default, (list, dict)) or key in {"max_parallel_jobs", "max_workers", "default_cores"}:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            if isinstance(default, list):
                return [part for part in text.split(",") if part]
            raise ConfigurationError(f"CLUSTRIX_{key.upper()}={text!r} is not valid: use JSON") from None
    return text


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.overrides: dict[str, Any] = {}
        self.profile: str | None = None
        self.file_cache: tuple[Path, float, dict[str, Any]] | None = None


_state = _State()


def _check_keys(values: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    # plugins are loaded only for a key core does not know
    keys = CORE_DEFAULTS if all(key in CORE_DEFAULTS for key in values) else known_keys()
    checked = {}
    for key, value in values.items():
        if key not in keys:
            raise ConfigurationError(
                f"unknown configuration key {key!r} in {where}{did_you_mean(key, keys)}; "
                f"known keys: {', '.join(sorted(keys))}"
            )
        checked[key] = _convert(key, value, keys[key])
    return checked


def _read_file() -> dict[str, Any]:
    path = config_path()
    fix = f"fix or move the file (mv {path} {path}.broken), or point CLUSTRIX_CONFIG at another file"
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigurationError(f"the config file {path} cannot be read ({exc.strerror}): {fix}") from None
    cache = _state.file_cache
    if cache and cache[0] == path and cache[1] == mtime:
        return cache[2]
    try:
        data: dict[str, Any] = tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"the config file {path} cannot be read ({exc.strerror}): {fix}") from None
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"the config file {path} is not UTF-8 text ({exc.reason}): {fix}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"the config file {path} is not valid TOML ({exc}): {fix}") from None
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise ConfigurationError(
            f"profiles in the config file {path} must be tables like [profiles.hpc] with keys under them, "
            f"got profiles = {profiles!r}: {fix}"
        )
    _state.file_cache = (path, mtime, data)
    return data


def resolve_config(*, profile: str | None = None, overrides: Mapping[str, Any] | None = None) -> ClusterConfig:
    """The configuration for one use: process-wide settings plus ``profile`` and ``overrides``."""
    keys = known_keys()
    data = _read_file()
    path = config_path()
    top = {k: v for k, v in data.items() if k != "profiles"}
    values = dict(keys)
    values.update(_check_keys(top, where=str(path)))
    with _state.lock:
        values.update(_state.overrides)
        active = profile or os.environ.get("CLUSTRIX_PROFILE") or _state.profile
    if active:
        profiles = data.get("profiles", {})
        if active not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigurationError(
                f"profile={active!r} is not defined in {path}; "
                f"add a [profiles.{active}] table (defined profiles: {known})"
            )
        values.update(_check_keys(profiles[active], where=f"[profiles.{active}] of {path}"))
    if overrides:
        values.update(_check_keys(overrides, where="@cluster(...)"))
    for key, default in keys.items():
        env = os.environ.get(f"CLUSTRIX_{key.upper()}")
        if env is not None:
            values[key] = _convert(key, _from_environment_text(key, env, default), default)
    config = ClusterConfig(values, active)
    config.default_resources  # noqa: B018 - validates default_* before anything is submitted
    return config


def configure(*, profile: str | None = None, **settings: Any) -> None:
    """Set configuration keys for this process; an unknown key is a ``ValueError`` naming it.

    ``configure(profile="hpc")`` selects a profile of the config file for every function
    that does not name its own.
    """
    checked = _check_keys(settings, where="configure()")
    if "default_cores" in checked or "default_memory" in checked or "default_time" in checked:
        Resources.parse(
            cores=checked.get("default_cores"),
            memory=checked.get("default_memory"),
            time=checked.get("default_time"),
            parameter_prefix="default_",
        )
    if "cluster_type" in checked:
        from clustrix.plugins import KNOWN_DISTRIBUTIONS, scheduler_names, unknown_scheduler_message

        installed = scheduler_names()
        name = checked["cluster_type"]
        if name not in installed and name not in KNOWN_DISTRIBUTIONS:  # a typo: a known one says what to install
            raise SchedulerNotFoundError(unknown_scheduler_message(name, installed))
    if profile is not None:
        resolve_config(profile=profile)  # an unknown profile raises here, before anything changes
    with _state.lock:
        _state.overrides.update(checked)
        if profile is not None:
            _state.profile = profile


def get_config() -> ClusterConfig:
    """The process-wide configuration as it resolves now."""
    return resolve_config()


def reset_config() -> None:
    """Forget every ``configure()`` call of this process (tests, notebooks)."""
    with _state.lock:
        _state.overrides.clear()
        _state.profile = None
        _state.file_cache = None
