"""Configuration: ``configure()``, ``get_config()``, TOML profiles and ``CLUSTRIX_*`` overrides.

Layers, later wins:

1. built-in defaults (and defaults declared by plugins through ``clustrix_config_keys``);
2. the config file's top-level keys
   (``platformdirs.user_config_dir("clustrix")/config.toml``, or ``$CLUSTRIX_CONFIG``);
3. the process-wide profile's table ``[profiles.NAME]`` (``configure(profile=...)`` or
   ``$CLUSTRIX_PROFILE``);
4. keys given to ``configure(...)`` in this process (also in the call that selects a profile);
5. a function's own ``@cluster(profile=...)``, which replaces the process-wide profile for
   that function only;
6. ``@cluster(...)`` keywords that are configuration keys;
7. ``CLUSTRIX_<KEY>`` environment variables (``CLUSTRIX_CLUSTER_TYPE=local``).

Every key has a declared type (:mod:`clustrix.config.keys`); a value of another type is
refused naming the key, the type and where the value came from (for the config file: its
path and line).
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import attrs
import platformdirs

from clustrix.config.keys import CORE_KEYS, ConfigKey, from_default, from_text, mismatch, type_matches
from clustrix.config.resources import Resources, parse_memory
from clustrix.errors import ConfigurationError, did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: The defaults of core's keys (declared with their types in :data:`clustrix.config.keys.CORE_KEYS`).
#: Scheduler-specific keys (``namespace``, ``image``, ``kubeconfig``, ...) are declared by their
#: plugins through ``clustrix_config_keys``.
CORE_DEFAULTS: dict[str, Any] = {name: key.default for name, key in CORE_KEYS.items()}

_LIST_KEYS = {"module_loads", "pre_execution_commands", "ship_modules", "exclude_modules"}
_secret_keys = {"password"}
REDACTED = "<redacted>"


def secret_size(value: Any) -> str:
    """How a secret value is shown: that it is set, and its size (``<set, 12 bytes>``), never the value."""
    return f"<set, {len(str(value).encode())} bytes>"


def redacted_variables(variables: Mapping[str, Any] | None) -> dict[str, str]:
    """``environment_variables`` as shown anywhere: the names, each value replaced by :func:`secret_size`."""
    return {str(name): secret_size(value) for name, value in (variables or {}).items()}


def config_path() -> Path:
    """Where the TOML config file is read from."""
    override = os.environ.get("CLUSTRIX_CONFIG")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir("clustrix")) / "config.toml"


def declared_keys() -> dict[str, ConfigKey]:
    """Core keys plus those declared by installed plugins, each with its type, default and meaning."""
    from clustrix.plugin.manager import plugin_config_keys

    return {**CORE_KEYS, **_typed(plugin_config_keys())}


def declarations() -> list[tuple[str, dict[str, ConfigKey]]]:
    """Who declares which keys: ``("clustrix-core", {...})`` first, then each installed plugin's distribution."""
    from clustrix.plugin.manager import get_plugin_manager, installed_plugins

    distributions = {info.name: info.distribution or info.name for info in installed_plugins()}
    by_distribution: dict[str, dict[str, ConfigKey]] = {}
    for impl in get_plugin_manager().hook.clustrix_config_keys.get_hookimpls():
        declared = cast("Mapping[str, Any]", impl.function() or {})
        by_distribution.setdefault(distributions.get(impl.plugin_name, impl.plugin_name), {}).update(_typed(declared))
    return [
        ("clustrix-core", dict(CORE_KEYS)),
        *sorted(((d, k) for d, k in by_distribution.items() if k), key=lambda item: item[0]),
    ]


def _typed(declared: Mapping[str, Any]) -> dict[str, ConfigKey]:
    """A plugin's declarations as :class:`ConfigKey` values (a bare default declares the default's type)."""
    return {k: v if isinstance(v, ConfigKey) else from_default(v) for k, v in declared.items()}


def reference_page() -> str:
    """The configuration reference (docs/configuration-reference.md) of core and the project's installed plugins.

    Third-party plugins are left out: the page documents what this project ships.
    """
    from clustrix.config.keys import render_reference
    from clustrix.plugin.manager import KNOWN_DISTRIBUTIONS

    project = {"clustrix-core", *KNOWN_DISTRIBUTIONS.values()}
    return render_reference((name, keys) for name, keys in declarations() if name in project)


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
        """A JSON-friendly copy; secrets (``password``) are left out unless asked for.

        ``environment_variables`` keep their values here (a job needs them): show
        :meth:`shown` instead.
        """
        return {k: v for k, v in self.values.items() if include_secrets or k not in _secret_keys}

    def shown(self) -> dict[str, Any]:
        """What may be printed: :meth:`as_dict` with ``environment_variables`` values as sizes (names kept)."""
        values = self.as_dict()
        if values.get("environment_variables"):
            values["environment_variables"] = redacted_variables(values["environment_variables"])
        return values

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
        """Jobs with the same key share a connection and a poll query.

        The scheduler, then the value of every key declared with ``connection=True`` (core's
        host, port, user and key file; a transport plugin's own, such as SSH's host-key policy).
        """
        return (self.values.get("cluster_type"), *(_hashable(self.values.get(k)) for k in connection_keys()))


def connection_keys() -> tuple[str, ...]:
    """The names of the keys declared with ``connection=True``, core's first (asked once per plugin set)."""
    from clustrix.plugin.manager import get_plugin_manager

    pm = get_plugin_manager()
    cached = _state.connection_keys
    if cached is None or cached[0] is not pm:
        cached = (pm, tuple(name for name, key in declared_keys().items() if key.connection))
        _state.connection_keys = cached
    return cached[1]


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


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


def _convert(key: str, value: Any, declared: ConfigKey) -> Any:
    """Coerce and check one value; raise ``ConfigurationError`` naming the key."""
    if declared.single_line:
        _check_single_line(key, value)
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
    if key == "retries" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ConfigurationError(f"retries={value!r} is not valid: use a whole number >= 0 (0: never run a call again)")
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


def _from_environment_text(key: str, text: str, declared: ConfigKey) -> Any:
    """A ``CLUSTRIX_<KEY>`` variable's text as a value of the key's declared type."""
    try:
        return from_text(text, declared.type)
    except ValueError as exc:
        raise ConfigurationError(f"CLUSTRIX_{key.upper()}={text!r} is not valid: {key} takes {exc}") from None


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.overrides: dict[str, Any] = {}
        self.profile: str | None = None
        self.file_cache: tuple[Path, float, _File] | None = None
        self.connection_keys: tuple[object, tuple[str, ...]] | None = None


_state = _State()


def _check_keys(
    values: Mapping[str, Any], *, where: str, line_of: Callable[[str], int | None] | None = None
) -> dict[str, Any]:
    """Check the names, declared types and values of ``values``; errors name the key, the fix and ``where``.

    ``line_of(key)`` gives the line of the config file a key was read from, when known.
    """
    # plugins are loaded only for a key core does not know
    keys = CORE_KEYS if all(key in CORE_KEYS for key in values) else declared_keys()
    checked = {}
    for key, value in values.items():
        line = line_of(key) if line_of else None
        origin = f"{where}, line {line}" if line else where
        if key not in keys:
            raise ConfigurationError(
                f"unknown configuration key {key!r} in {origin}{did_you_mean(key, keys)}; "
                f"known keys: {', '.join(sorted(keys))} (a key of a scheduler plugin is known once the plugin is "
                "installed: clustrix plugins lists them)"
            )
        declared = keys[key]
        if not type_matches(value, declared.type):
            raise ConfigurationError(
                f"{key}={value!r} in {origin} is not valid: {key} {mismatch(value, declared.type)}"
            )
        if isinstance(value, os.PathLike):  # a pathlib.Path where the type takes one: kept as its string
            value = os.fspath(value)
        try:
            checked[key] = _convert(key, value, declared)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{exc} (in {origin})") from None
    return checked


def check_settings(values: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """Check settings a program gives (``configure()``, ``@cluster(...)``): every check of a key, in one place.

    The names, types and values of :func:`_check_keys`, then what needs several keys or the
    installed plugins: the ``default_*`` resources parse, and ``cluster_type`` names an installed
    scheduler or one of the project's (a typo fails here with a "did you mean", not at the first call).
    """
    checked = _check_keys(values, where=where)
    if "default_cores" in checked or "default_memory" in checked or "default_time" in checked:
        Resources.parse(
            cores=checked.get("default_cores"),
            memory=checked.get("default_memory"),
            time=checked.get("default_time"),
            parameter_prefix="default_",
        )
    if checked.get("cluster_type") is not None:
        from clustrix.plugin.manager import check_scheduler_name

        check_scheduler_name(checked["cluster_type"])
    return checked


def _line_in_file(text: str, path: tuple[str, ...]) -> int | None:
    """The line of a TOML text that sets the dotted key ``path`` (``("profiles", "hpc", "cluster_host")``).

    ``tomllib`` keeps no positions: scan the text for table headers and ``key =`` lines
    (quoted and dotted keys included); a key set inside an inline table is not found (None).
    """
    wanted = ".".join(path)
    table = ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        header = _TABLE_HEADER.match(stripped)
        if header:
            table = _dotted(header.group(1))
            continue
        name, sep, _ = stripped.partition("=")
        if sep and not stripped.startswith("#") and ".".join(p for p in (table, _dotted(name)) if p) == wanted:
            return number
    return None


#: ``[profiles.hpc]`` or ``[[x]]``, a comment after it allowed; not a line of a multi-line array (``["a", "b"],``).
_TABLE_HEADER = re.compile(r"^\[\[?\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")


def _dotted(name: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in name.split("."))


@attrs.frozen
class _File:
    """The config file's keys, checked: the top-level ones and each profile's."""

    top: dict[str, Any]
    profiles: dict[str, dict[str, Any]]


def _read_file() -> _File:
    path = config_path()
    fix = f"fix or move the file (mv {path} {path}.broken), or point CLUSTRIX_CONFIG at another file"
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return _File({}, {})
    except OSError as exc:
        raise ConfigurationError(f"the config file {path} cannot be read ({exc.strerror}): {fix}") from None
    cache = _state.file_cache
    if cache and cache[0] == path and cache[1] == mtime:
        return cache[2]
    try:
        text = path.read_bytes().decode("utf-8")
        data: dict[str, Any] = tomllib.loads(text)
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
    # every profile is checked, the ones not selected now too: a typo is found before the day it is used
    checked = _File(
        top=_check_keys(
            {k: v for k, v in data.items() if k != "profiles"},
            where=str(path),
            line_of=lambda key: _line_in_file(text, (key,)),
        ),
        profiles={
            name: _check_keys(
                table,
                where=f"[profiles.{name}] of {path}",
                line_of=lambda key, name=name: _line_in_file(text, ("profiles", name, key)),  # type: ignore[misc]
            )
            for name, table in profiles.items()
        },
    )
    _state.file_cache = (path, mtime, checked)
    return checked


def resolve_config(*, profile: str | None = None, overrides: Mapping[str, Any] | None = None) -> ClusterConfig:
    """The configuration for one use: process-wide settings plus a function's own ``profile`` and ``overrides``.

    Later wins: defaults, the file's top-level keys, the process-wide profile, ``configure()``
    keys, the function's own profile (which replaces the process-wide one), ``overrides``,
    ``CLUSTRIX_<KEY>`` variables.
    """
    keys = declared_keys()
    file = _read_file()
    values = {name: key.default for name, key in keys.items()}
    values.update(file.top)
    with _state.lock:
        configured = dict(_state.overrides)
        process_profile = os.environ.get("CLUSTRIX_PROFILE") or _state.profile
    active = profile or process_profile
    table = _profile_table(file, active) if active else {}
    if not profile:
        values.update(table)
    values.update(configured)
    if profile:
        values.update(table)
    if overrides:
        values.update(_check_keys(overrides, where="@cluster(...)"))
    for key, declared in keys.items():
        env = os.environ.get(f"CLUSTRIX_{key.upper()}")
        if env is not None:
            value = _from_environment_text(key, env, declared)
            values.update(_check_keys({key: value}, where=f"the environment variable CLUSTRIX_{key.upper()}"))
    config = ClusterConfig(values, active)
    config.default_resources  # noqa: B018 - validates default_* before anything is submitted
    return config


def _profile_table(file: _File, name: str) -> dict[str, Any]:
    if name not in file.profiles:
        known = ", ".join(sorted(file.profiles)) or "none"
        raise ConfigurationError(
            f"profile={name!r} is not defined in {config_path()}; "
            f"add a [profiles.{name}] table (defined profiles: {known})"
        )
    return file.profiles[name]


_UNSET: Any = object()


def configure(*, profile: str | None = _UNSET, **settings: Any) -> None:
    """Set configuration keys for this process; an unknown key or a value of the wrong type is a ``ValueError``.

    ``configure(profile="hpc")`` selects a profile of the config file for every function
    that does not name its own; ``configure(profile=None)`` deselects it. Keys given to
    ``configure()`` win over the process-wide profile, whether given in the same call or
    another; :func:`reset_config` forgets them all.
    """
    checked = check_settings(settings, where="configure()")
    if profile is not _UNSET and profile is not None:
        if not isinstance(profile, str) or not profile:
            raise ConfigurationError(f"profile={profile!r} is not valid: use the name of a [profiles.NAME] table")
        resolve_config(profile=profile)  # an unknown profile raises here, before anything changes
    with _state.lock:
        _state.overrides.update(checked)
        if profile is not _UNSET:
            _state.profile = profile


def get_config() -> ClusterConfig:
    """The process-wide configuration as it resolves now."""
    return resolve_config()


def reset_config() -> None:
    """Forget every ``configure()`` call of this process, the selected profile too (tests, notebooks).

    The config file and ``CLUSTRIX_*`` variables still apply; the file is read again on next use.
    """
    with _state.lock:
        _state.overrides.clear()
        _state.profile = None
        _state.file_cache = None
