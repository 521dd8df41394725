"""The plugin manager and the typed facade core uses to talk to one scheduler.

The manager is built lazily by :func:`get_plugin_manager` from the ``clustrix``
entry-point group. Each entry point is loaded on its own, so one broken plugin is a
warning naming it, not a crash. ``CLUSTRIX_DISABLE_PLUGINS`` (comma-separated
entry-point names) blocks plugins, as tox's ``set_blocked`` does.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from clustrix.errors import ConfigurationError, SchedulerNotFoundError, did_you_mean
from clustrix.log import get_logger
from clustrix.plugin import hookspecs
from clustrix.plugin.types import SCHEDULER_MEMBERS, Scheduler

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig
    from clustrix.plugin.dryrun import DryRun
    from clustrix.plugin.transport import Transport
    from clustrix.plugin.types import JobHandle, JobSpec, JobStatus, Outcome

ENTRY_POINT_GROUP = "clustrix"
log = get_logger("clustrix.plugin.manager")

#: Schedulers maintained by the project, so an unknown name can say what to install.
KNOWN_DISTRIBUTIONS = {
    "slurm": "clustrix-slurm",
    "pbs": "clustrix-pbs",
    "torque": "clustrix-pbs",  # registered by clustrix-pbs with the Torque flavour fixed
    "sge": "clustrix-sge",
    "kubernetes": "clustrix-k8s",
    "ssh": "clustrix-ssh",
}


class PluginWarning(UserWarning):
    """A plugin could not be loaded or registered; clustrix goes on without it."""


@attrs.frozen
class PluginInfo:
    """An installed plugin: its entry-point name, distribution and version."""

    name: str
    distribution: str | None
    version: str | None
    schedulers: tuple[str, ...]


class RegisteredScheduler:
    """One registered scheduler, with typed methods over its routed hooks.

    ``impl`` is the object the plugin registered, a :class:`clustrix.plugin.types.Scheduler`.
    """

    def __init__(
        self, name: str, impl: Scheduler, pm: pluggy.PluginManager, others: Callable[[], list[object]]
    ) -> None:
        self.name = name
        self.impl = impl
        self._pm = pm
        self._others = others

    def _caller(self, hook: str) -> Any:
        return self._pm.subset_hook_caller(hook, remove_plugins=self._others())

    def submit(self, spec: JobSpec, wake: Callable[[], None]) -> JobHandle:
        handle = self._caller("clustrix_submit")(spec=spec, wake=wake)
        if handle is None:
            raise ConfigurationError(f"scheduler {self.name!r} returned no job handle from clustrix_submit")
        return handle  # type: ignore[no-any-return]

    def dry_run(self, spec: JobSpec) -> DryRun:
        shown = self._caller("clustrix_dry_run")(spec=spec)
        if shown is None:
            raise ConfigurationError(
                f"scheduler {self.name!r} cannot show a dry run: its plugin does not implement clustrix_dry_run"
            )
        return shown  # type: ignore[no-any-return]

    def poll(self, handles: Sequence[JobHandle], config: ClusterConfig) -> Mapping[str, JobStatus]:
        return self._caller("clustrix_poll")(handles=list(handles), config=config) or {}

    def fetch(self, handle: JobHandle, config: ClusterConfig) -> Sequence[Outcome | None]:
        fetched = self._caller("clustrix_fetch")(handle=handle, config=config)
        if fetched is None:
            return [None] * handle.size
        outcomes: Sequence[Outcome | None] = fetched if isinstance(fetched, Sequence) else list(fetched)
        if len(outcomes) != handle.size:
            # a future without its outcome would wait for ever: missing calls count as lost
            warnings.warn(
                f"scheduler {self.name!r} fetched {len(outcomes)} outcomes for job {handle.job_id} of "
                f"{handle.size} calls; the missing ones are reported as ended without a result",
                PluginWarning,
                stacklevel=2,
            )
            outcomes = ([*outcomes] + [None] * handle.size)[: handle.size]
        return outcomes

    def cancel(self, handle: JobHandle, config: ClusterConfig) -> bool:
        return bool(self._caller("clustrix_cancel")(handle=handle, config=config))

    def read_logs(self, handle: JobHandle, config: ClusterConfig, stream: str = "stderr") -> str:
        return self._caller("clustrix_read_logs")(handle=handle, config=config, stream=stream) or ""

    def remove_job_dir(self, handle: JobHandle, config: ClusterConfig) -> bool:
        """Delete the job's remote directory (``cleanup_on_success``); False when the scheduler keeps none."""
        return bool(self._caller("clustrix_remove_job_dir")(handle=handle, config=config))


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.pm: pluggy.PluginManager | None = None
        self.schedulers: dict[str, RegisteredScheduler] = {}
        self.infos: list[PluginInfo] = []


_registry = _Registry()


def _blocked() -> set[str]:
    return {name.strip() for name in os.environ.get("CLUSTRIX_DISABLE_PLUGINS", "").split(",") if name.strip()}


def _build() -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    blocked = _blocked()
    loaded: list[tuple[str, object, importlib.metadata.EntryPoint]] = []
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in blocked or pm.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not break the others
            dist = ep.dist.name if ep.dist else "?"
            warnings.warn(
                f"clustrix plugin {ep.name!r} ({ep.value}, from {dist}) failed to load and is skipped: "
                f"{type(exc).__name__}: {exc}",
                PluginWarning,
                stacklevel=3,
            )
            continue
        loaded.append((ep.name, plugin, ep))

    schedulers: dict[str, RegisteredScheduler] = {}
    impls: list[object] = []

    def others_of(impl: object) -> Callable[[], list[object]]:
        return lambda: [o for o in impls if o is not impl]

    current: list[str] = []

    def register(name: str, impl: object) -> None:
        owner = current[0] if current else "?"
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"plugin {owner!r} registered a scheduler with an invalid name {name!r}")
        if name in schedulers:
            raise ConfigurationError(f"plugin {owner!r} registered scheduler {name!r}, which is already registered")
        if not isinstance(impl, Scheduler):
            missing = [member for member in SCHEDULER_MEMBERS if not hasattr(impl, member)]
            raise ConfigurationError(
                f"plugin {owner!r} registered scheduler {name!r} without {', '.join(missing)}: a scheduler "
                "declares every member of clustrix.plugin.types.Scheduler"
            )
        pm.register(impl, name=f"scheduler:{name}")
        impls.append(impl)
        schedulers[name] = RegisteredScheduler(name, impl, pm, others_of(impl))

    infos = []
    for ep_name, plugin, ep in loaded:
        before = set(schedulers)
        current[:] = [ep_name]
        # one plugin at a time, through pluggy: a plugin that fails to register is a warning naming it
        others = [p for _name, p, _ep in loaded if p is not plugin]
        try:
            pm.subset_hook_caller("clustrix_register_schedulers", remove_plugins=others)(register=register)
        except Exception as exc:  # noqa: BLE001
            warnings.warn(
                f"clustrix plugin {ep_name!r} failed to register its schedulers: {type(exc).__name__}: {exc}",
                PluginWarning,
                stacklevel=3,
            )
        distribution = ep.dist
        infos.append(
            PluginInfo(
                name=ep_name,
                distribution=distribution.name if distribution else None,
                version=distribution.version if distribution else None,
                schedulers=tuple(sorted(set(schedulers) - before)),
            )
        )
    _registry.pm = pm
    _registry.schedulers = schedulers
    _registry.infos = infos
    log.debug("clustrix.plugins_loaded", plugins=[i.name for i in infos], schedulers=sorted(schedulers))


def get_plugin_manager() -> pluggy.PluginManager:
    """The process's plugin manager, built on first use."""
    with _registry.lock:
        if _registry.pm is None:
            _build()
        assert _registry.pm is not None
        return _registry.pm


def reset_plugins() -> None:
    """Forget the loaded plugins; the next use loads them again (tests, after installs)."""
    with _registry.lock:
        _registry.pm = None
        _registry.schedulers = {}
        _registry.infos = []


def installed_plugins() -> list[PluginInfo]:
    get_plugin_manager()
    return list(_registry.infos)


def scheduler_names() -> list[str]:
    get_plugin_manager()
    return sorted(_registry.schedulers)


def get_scheduler(name: str) -> RegisteredScheduler:
    """The scheduler registered as ``name``; an unknown name says which distribution to install."""
    get_plugin_manager()
    try:
        return _registry.schedulers[name]
    except KeyError:
        pass
    raise SchedulerNotFoundError(unknown_scheduler_message(name, _registry.schedulers))


def check_scheduler_name(name: str) -> None:
    """Refuse a ``cluster_type`` no installed plugin provides, unless it names one of the project's schedulers.

    A known name that is not installed (``"slurm"`` without ``clustrix-slurm``) passes: the first
    call says what to install. A typo (``"slurmm"``) raises :class:`SchedulerNotFoundError` with a
    "did you mean" suggestion.
    """
    installed = scheduler_names()
    if name not in installed and name not in KNOWN_DISTRIBUTIONS:
        raise SchedulerNotFoundError(unknown_scheduler_message(name, installed))


def unknown_scheduler_message(name: str, installed: Iterable[str]) -> str:
    """Why ``cluster_type=name`` cannot be used, and the fix; only distributions that exist are suggested."""
    names = sorted(installed)
    text = f"cluster_type={name!r} is not provided by any installed plugin (installed: {', '.join(names) or 'none'})"
    dist = KNOWN_DISTRIBUTIONS.get(name)
    if dist is not None:
        return f"{text}; install it with: pip install {dist}"
    return (
        f"{text}{did_you_mean(name, [*names, *KNOWN_DISTRIBUTIONS])}; the project's schedulers are "
        f"{', '.join(sorted(set(KNOWN_DISTRIBUTIONS) | {'local'}))} (a third-party plugin names its own)"
    )


def plugin_config_keys() -> dict[str, Any]:
    """The configuration keys installed plugins declare (``clustrix_config_keys``), with defaults."""
    keys: dict[str, Any] = {}
    for declared in get_plugin_manager().hook.clustrix_config_keys():
        if declared:
            keys.update(declared)
    return keys


def plugin_cli_commands(add: Callable[..., Any]) -> None:
    """Let every plugin add its commands to the ``clustrix`` command line (``clustrix_cli_commands``)."""
    get_plugin_manager().hook.clustrix_cli_commands(add=add)


def plugin_doctor_checks(config: ClusterConfig) -> list[tuple[str, Callable[[], object]]]:
    """The checks plugins add to ``clustrix doctor`` (``clustrix_doctor_checks``), in call order."""
    checks: list[tuple[str, Callable[[], object]]] = []
    for declared in get_plugin_manager().hook.clustrix_doctor_checks(config=config):
        checks.extend(declared or ())
    return checks


def plugin_resource_keys() -> dict[str, str]:
    """The ``@cluster`` keywords the registered schedulers declare (``Scheduler.resource_keys``), with descriptions."""
    get_plugin_manager()
    keys: dict[str, str] = {}
    for registered in _registry.schedulers.values():
        keys.update(registered.impl.resource_keys)
    return keys


def capture_environment(config: ClusterConfig) -> dict[str, Any]:
    snapshot: dict[str, Any] = {}
    # results come in call order, core's (tryfirst) first; a key once set is never overwritten,
    # so no plugin can replace core's python, distributions or hash
    for part in get_plugin_manager().hook.clustrix_capture_environment(config=config):
        for key, value in (part or {}).items():
            snapshot.setdefault(key, value)
    return snapshot


def is_local_host(config: ClusterConfig) -> bool:
    """True when the scheduler runs on this machine (no ``cluster_host``, or plain ``localhost``)."""
    host = config.get("cluster_host")
    return not host or (
        host in {"localhost", "127.0.0.1"} and config.get("cluster_port") in (None, 22) and not config.get("username")
    )


def transport_for(config: ClusterConfig) -> Transport:
    """The transport that reaches the scheduler: local on the login node, else via a plugin."""
    from clustrix.plugin.transport import LocalTransport

    if is_local_host(config):
        return LocalTransport()
    host = config.get("cluster_host")
    transport = get_plugin_manager().hook.clustrix_make_transport(config=config)
    if transport is None:
        raise ConfigurationError(
            f"cluster_host={host!r} needs a remote transport and none is installed; "
            "install it with: pip install clustrix-ssh"
        )
    return transport  # type: ignore[no-any-return]
