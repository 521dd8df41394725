"""``@cluster``: the decorator users put on a function, and ``clustrix.Executor``."""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import inspect
import json
import os
import pickle
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, overload

import attrs

from clustrix.api import dependencies
from clustrix.api.futures import ClusterFuture, InlineFuture, get_manager
from clustrix.api.progress import wait as wait_with_progress
from clustrix.api.progress import wanted as wanted_progress
from clustrix.config.resources import Resources
from clustrix.config.settings import CORE_DEFAULTS, ClusterConfig, check_settings, resolve_config
from clustrix.errors import ConfigurationError, did_you_mean
from clustrix.plugin.dryrun import DryRun
from clustrix.plugin.manager import (
    RegisteredScheduler,
    capture_environment,
    get_scheduler,
    plugin_config_keys,
    plugin_resource_keys,
)
from clustrix.plugin.types import JobSpec, MappedArguments
from clustrix.remote.runner import INSIDE_ENV, unwrap

_RESOURCE_KEYS = ("cores", "memory", "time", "partition", "queue", "gpus")

_CORES = "cores={value!r} (cores of one call, on one node)"
_MEMORY = "memory={value!r} (a str with its unit, e.g. '16GB'; an int is bytes)"
_TIME = "time={value!r} ('HH:MM:SS', 'D-HH:MM:SS' or a number of minutes)"
_PARALLEL = "max_parallel_jobs={value!r} (how many calls of a map run at once)"
_VARIABLES = (
    "environment_variables={{'NAME': 'value'}} for variables of the job, conda_env_name='name' for a conda "
    "environment, module_loads=['name'] for modules"
)
#: Keywords of SLURM, PBS, submitit, dask-jobqueue, Ray and the original clustrix 0.1.x that users
#: bring along, and what ``@cluster`` calls them: an unknown keyword found here gets this in its
#: error instead of a spelling guess (``ncpus`` is not a misspelt ``gpus``). ``{value!r}`` is the value given.
KEYWORD_ALIASES: dict[str, str] = {
    **dict.fromkeys(
        ("ncpus", "cpus", "cpus_per_task", "num_cpus", "n_cpus", "ncores", "num_cores", "n_cores", "threads"), _CORES
    ),
    "nodes": "cores=N (each call runs on one node) and run many calls side by side with f.map(items)",
    "ntasks": "cores={value!r} (each call is one task) and run many calls side by side with f.map(items)",
    **dict.fromkeys(("mem", "ram", "memory_limit"), _MEMORY),
    "mem_gb": "memory='{value}GB'",
    "mem_mb": "memory='{value}MB'",
    "memory_gb": "memory='{value}GB'",
    "memory_mb": "memory='{value}MB'",
    **dict.fromkeys(("walltime", "time_limit", "wall_time", "timeout", "runtime", "max_time"), _TIME),
    "timeout_min": "time={value!r} (a number is minutes)",
    **dict.fromkeys(("gpus_per_node", "gpus_per_task", "ngpus", "num_gpus", "n_gpus", "gpu"), "gpus={value!r}"),
    **dict.fromkeys(("queue_name", "qname"), "queue={value!r}"),
    "slurm_partition": "partition={value!r}",
    **dict.fromkeys(("n_workers", "workers", "num_workers", "array_parallelism", "slurm_array_parallelism"), _PARALLEL),
    "parallel": "f.map(items) to run calls side by side (max_parallel_jobs=N limits how many at once)",
    **dict.fromkeys(("environment", "env", "env_vars"), _VARIABLES),
    "conda_env": "conda_env_name={value!r}",
    **dict.fromkeys(("modules", "module"), "module_loads=[...] (a list of module names)"),
    **dict.fromkeys(
        ("job_script_prologue", "prologue", "setup", "slurm_setup"), "pre_execution_commands=[...] (shell lines)"
    ),
    **dict.fromkeys(("scheduler", "backend", "cluster"), "cluster_type={value!r}"),
    **dict.fromkeys(("host", "hostname"), "cluster_host={value!r}"),
    "user": "username={value!r}",
    "port": "cluster_port={value!r}",
    "python": "python_executable={value!r}",
}


def keyword_hint(key: str, value: Any, known: Iterable[str]) -> str:
    """What to write instead of the unknown keyword ``key``: its ``@cluster`` name, or a spelling guess."""
    alias = KEYWORD_ALIASES.get(key)
    if alias is not None:
        return f": for clustrix, write {alias.format(value=value)}; otherwise use"
    return did_you_mean(key, known) + ": use"


def split_options(options: dict[str, Any]) -> tuple[Resources, dict[str, Any], str | None]:
    """Split ``@cluster`` keywords into resources (validated now), config overrides and a profile.

    Keywords that are configuration keys (``cluster_type``, ``executor``, ...) override the
    configuration for this function; every other keyword is a backend-specific resource
    (``account``, ``qos``, ``cpu_limit``, ...) passed through to the scheduler plugin.

    A keyword core does not know must be declared by an installed plugin, as a
    resource (a registered scheduler's ``resource_keys``) or a configuration key
    (``clustrix_config_keys``); otherwise it is a ``ValueError`` here, with a "did you
    mean" suggestion, so a typo never runs. Plugins are loaded only for such keywords.
    Keys declared by plugins as configuration keys are moved from the extras to the
    configuration at the first submission.
    """
    options = dict(options)
    profile = options.pop("profile", None)
    if profile is not None and (not isinstance(profile, str) or not profile):
        raise ValueError(f"profile={profile!r} is not valid: use the name of a [profiles.NAME] table")
    keys = CORE_DEFAULTS
    config_overrides = {k: options.pop(k) for k in list(options) if k in keys}
    resource_args = {k: options.pop(k) for k in _RESOURCE_KEYS if k in options}
    _check_extras(options)
    resources = Resources.parse(**resource_args, **options)
    overrides = check_settings(config_overrides, where="@cluster(...)")
    return resources, overrides, profile


def _check_extras(extras: dict[str, Any]) -> None:
    """Refuse keywords that neither core nor an installed plugin declares."""
    if not extras:
        return
    declared = plugin_resource_keys()
    config_keys = plugin_config_keys()
    unknown = sorted(k for k in extras if k not in declared and k not in config_keys)
    if not unknown:
        return
    known = [*_RESOURCE_KEYS, "profile", *CORE_DEFAULTS, *config_keys, *declared]
    key = unknown[0]
    plugins = ", ".join(sorted(declared)) or "none"
    raise ValueError(
        f"@cluster(...) got an unknown keyword {key}={extras[key]!r}{keyword_hint(key, extras[key], known)} one of "
        f"{', '.join(_RESOURCE_KEYS)}, a configuration key, or a keyword an installed scheduler plugin declares "
        f"(declared now: {plugins})"
    )


def _check_function(func: Callable[..., Any]) -> None:
    """Refuse functions whose result cannot come back: generators and coroutines."""
    target = inspect.unwrap(func)
    name = getattr(target, "__qualname__", repr(target))
    if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
        raise TypeError(
            f"@cluster cannot run the generator function {name}: a generator cannot be sent back from a worker "
            "or a cluster. Return a list instead (return list(...) or build the list in the function)."
        )
    if inspect.iscoroutinefunction(target):
        raise TypeError(
            f"@cluster cannot run the coroutine function {name} (async def): use a plain def that calls "
            "asyncio.run(...) inside and returns the value."
        )


def unpicklable_argument(
    func: Callable[..., Any], arguments: Sequence[tuple[tuple[Any, ...], dict[str, Any]]]
) -> str | None:
    """Describe the first argument (or the function) that cannot be pickled, e.g. ``"argument 'lock' of call 0"``.

    Used only after pickling a job failed, to name the culprit.
    """
    from clustrix.remote.runner import dumps

    def fails(value: Any) -> str | None:
        try:
            dumps(value)
        except Exception as exc:  # noqa: BLE001 - any pickling failure names the value
            return f"{type(exc).__name__}: {exc}"
        return None

    error = fails(func)
    if error:
        return f"the function {getattr(func, '__qualname__', func)!r} itself ({error})"
    try:
        parameters = list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        parameters = []
    for call, (args, kwargs) in enumerate(arguments):
        for position, value in enumerate(args):
            error = fails(value)
            if error:
                name = f"{parameters[position]!r} " if position < len(parameters) else ""
                return f"argument {name}(position {position}) of call {call} ({error})"
        for key, value in kwargs.items():
            error = fails(value)
            if error:
                return f"argument {key!r} of call {call} ({error})"
    return None


def _mapped_arguments(iterables: tuple[Iterable[Any], ...]) -> MappedArguments:
    """One ``(args, kwargs)`` pair per item, zipped like the builtin ``map``."""
    return MappedArguments(list(zip(*iterables, strict=False)))


class _EnvironmentCache:
    """One environment snapshot per distinct configuration: capturing lists every distribution."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.snapshots: dict[str, dict[str, Any]] = {}

    def get(self, config: ClusterConfig) -> dict[str, Any]:
        key = json.dumps(config.as_dict(), sort_keys=True, default=str)
        with self.lock:
            if key not in self.snapshots:
                self.snapshots[key] = capture_environment(config)
            return self.snapshots[key]


_environments = _EnvironmentCache()

#: ``inside`` is set in the threads of the local executor's thread pool.
_worker_thread = threading.local()


def mark_worker_thread() -> None:
    """Calls made in this thread (a worker of the local executor's thread pool) are inside a call."""
    _worker_thread.inside = True


def inside_a_call() -> str | None:
    """Where the running code is: ``"job"`` (a job's runner), ``"local"`` (a local worker), or None (neither)."""
    if getattr(_worker_thread, "inside", False):
        return "local"
    return os.environ.get(INSIDE_ENV) or None


def run_inline(
    func: Callable[..., Any], arguments: Sequence[tuple[tuple[Any, ...], dict[str, Any]]], *, whole: bool
) -> list[ClusterFuture]:
    """Run every call here and now; finished futures as ``_submit`` returns them (see ``nested_calls``)."""
    func = unwrap(func)
    futures: list[ClusterFuture] = []
    for index, (args, kwargs) in enumerate(arguments):
        future = InlineFuture(None if whole else index)
        try:
            future.set_result(func(*args, **kwargs))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - SystemExit too, as on a worker: carried to the future
            future.set_exception(exc)
        futures.append(future)
    if not whole:
        return futures
    result = InlineFuture(None)
    failed = next((f.exception() for f in futures if f.exception() is not None), None)
    if failed is not None:
        result.set_exception(failed)
    else:
        result.set_result([f.result() for f in futures])
    return [result]


class ClusterFunction:
    """A function decorated with ``@cluster``: call it, ``.submit()`` it or ``.map()`` it."""

    __clustrix_function__ = True

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        resources: Resources | None = None,
        config_overrides: dict[str, Any] | None = None,
        profile: str | None = None,
    ) -> None:
        if not callable(func):
            raise TypeError(f"@cluster needs a function, got {func!r}")
        _check_function(func)
        functools.update_wrapper(self, func)
        self.func = func
        self.resources = resources or Resources()
        self.config_overrides = {k: v for k, v in (config_overrides or {}).items() if v is not None}
        self.profile = profile
        self._plugin_keys_moved = False
        #: whether calls made inside a call run inline (decided once; shared with the methods bound from it)
        self._inline: list[bool] = []

    def _move_plugin_keys(self) -> None:
        """Move extras that installed plugins declare as configuration keys into the overrides."""
        if self._plugin_keys_moved:
            return
        declared = plugin_config_keys()
        moved = {k: v for k, v in self.resources.extra.items() if k in declared}
        if moved:
            self.config_overrides = {**self.config_overrides, **check_settings(moved, where="@cluster(...)")}
            extra = {k: v for k, v in self.resources.extra.items() if k not in moved}
            self.resources = attrs.evolve(self.resources, extra=extra)
        self._plugin_keys_moved = True

    def __repr__(self) -> str:
        return f"<cluster function {getattr(self.func, '__qualname__', self.func)!r}>"

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (a job's code refers to it): where it runs decides anew whether nested calls run inline."""
        return {**self.__dict__, "_inline": []}

    def __get__(self, instance: Any, owner: type | None = None) -> ClusterFunction:
        """``@cluster`` on a method: ``obj.method`` is bound to ``obj``, which travels with each call by value."""
        if instance is None:
            return self
        bound = object.__new__(type(self))
        bound.__dict__.update(self.__dict__)
        method = functools.partial(self.func, instance)
        method.__qualname__ = getattr(self.func, "__qualname__", type(self.func).__name__)  # type: ignore[attr-defined]
        bound.func = method
        bound.__dict__["__wrapped__"] = method  # what the runner calls if this bound function is pickled
        return bound

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the call where it is configured to run; block and return its result."""
        submitted: list[ClusterFuture] = []
        try:
            self._submit([(args, kwargs)], into=submitted)
            return submitted[0].result()
        except KeyboardInterrupt:
            if not submitted:
                raise
            raise submitted[0].interrupted() from None  # a Ctrl-C before the wait began stops the call too

    def submit(self, *args: Any, **kwargs: Any) -> ClusterFuture:
        """Submit one call; return a ``concurrent.futures.Future`` with ``job_id`` on it."""
        return self._submit([(args, kwargs)])[0]

    def submit_map(self, *iterables: Iterable[Any]) -> list[ClusterFuture]:
        """Submit one call per item (one job array on a batch scheduler); return the futures."""
        arguments = _mapped_arguments(iterables)
        return self._submit(arguments) if arguments else []

    def map(self, *iterables: Iterable[Any], timeout: float | None = None, progress: bool | None = None) -> list[Any]:
        """Like the builtin ``map``, run remotely as one job array; return the results in order.

        The first failed call's exception is raised (after all calls have finished or
        ``timeout`` seconds have passed). A progress bar of calls done, failed, running
        and pending shows in a terminal or a notebook (see :mod:`clustrix.api.progress`);
        ``progress=False`` turns it off, ``True`` forces it.
        """
        arguments = _mapped_arguments(iterables)
        if not arguments:
            return []
        submitted: list[ClusterFuture] = []
        try:
            self._submit(arguments, whole=True, into=submitted)
            (whole,) = submitted
            if not isinstance(whole, InlineFuture) and wanted_progress(progress, whole._job.config):
                name = getattr(self.func, "__qualname__", "map")
                result: list[Any] = wait_with_progress(whole, len(arguments), name, timeout)
            else:
                result = whole.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"the {len(arguments)} calls had not all finished after {timeout} s") from None
        except KeyboardInterrupt:
            if not submitted:
                raise
            raise submitted[0].interrupted() from None  # a Ctrl-C before the wait began stops the calls too
        return result

    def config(self) -> ClusterConfig:
        """The configuration this function would be submitted with now."""
        self._move_plugin_keys()
        return resolve_config(profile=self.profile, overrides=self.config_overrides)

    @property
    def job_script(self) -> JobScript:
        """Show what a call would submit, without submitting: ``fn.job_script(*args)``, ``fn.job_script.map(items)``.

        Like dask-jobqueue's ``job_script()``: returns a :class:`clustrix.plugin.dryrun.DryRun` whose
        ``str()`` is the exact job script and submit command(s). See :mod:`clustrix.plugin.dryrun`.
        """
        return JobScript(self)

    def _spec(self, arguments: Sequence[tuple[tuple[Any, ...], dict[str, Any]]]) -> tuple[JobSpec, RegisteredScheduler]:
        config = self.config()
        scheduler = get_scheduler(config.cluster_type)
        resources = self.resources.with_defaults(config.default_resources)
        environment = _environments.get(config) if scheduler.impl.needs_environment else {}
        spec = JobSpec(
            name=getattr(self.func, "__qualname__", type(self.func).__name__),
            func=self.func,
            arguments=arguments,
            resources=resources,
            config=config,
            environment=environment,
        )
        return spec, scheduler

    def _submit(
        self,
        arguments: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
        *,
        whole: bool = False,
        into: list[ClusterFuture] | None = None,
    ) -> list[ClusterFuture]:
        """Submit the calls; their futures, also added to ``into`` as soon as they exist (see ``JobManager.submit``)."""
        if inside_a_call() and self._runs_inline():
            futures = run_inline(self.func, arguments, whole=whole)
            if into is not None:
                into.extend(futures)
            return futures
        if (chained := dependencies.submit(self, arguments, whole=whole, into=into)) is not None:
            return chained  # some arguments are futures (see clustrix.api.dependencies)
        spec, scheduler = self._spec(arguments)
        with self._naming_unpicklable(spec):
            return get_manager().submit(spec, scheduler, whole=whole, into=into)

    def _runs_inline(self) -> bool:
        """Inside a call (a local worker, a job): whether this call runs right there (``nested_calls``).

        ``nested_calls="submit"`` submits as configured instead, but a local worker cannot
        start another pool: a local call made in a local worker always runs inline. Decided
        at the first such call in a process (resolving the configuration costs far more
        than a call made inline).
        """
        if not self._inline:
            try:
                config = self.config()
            except ConfigurationError:  # e.g. a profile the job's machine does not define: inline needs none
                inline = True
            else:
                submit = config.get("nested_calls", "inline") == "submit"
                inline = not submit or (config.cluster_type == "local" and inside_a_call() == "local")
            self._inline[:] = [inline]
        return self._inline[0]

    def _dry_run(self, arguments: Sequence[tuple[tuple[Any, ...], dict[str, Any]]]) -> DryRun:
        spec, scheduler = self._spec(arguments)
        with self._naming_unpicklable(spec):
            return scheduler.dry_run(spec)

    @contextlib.contextmanager
    def _naming_unpicklable(self, spec: JobSpec) -> Iterator[None]:
        """Turn a pickling failure into a ``TypeError`` naming the argument that cannot be pickled."""
        try:
            yield
        except (TypeError, AttributeError, pickle.PicklingError) as exc:
            culprit = unpicklable_argument(self.func, spec.arguments)
            if culprit is None:
                raise
            raise TypeError(
                f"cannot send the call of {spec.name} to {spec.config.cluster_type}: {culprit} cannot be pickled. "
                "Pass something picklable instead (a path, a number, plain data) and create the object inside "
                "the function; on the local executor, executor='thread' runs calls in threads, where nothing "
                "is pickled."
            ) from exc


class JobScript:
    """``fn.job_script``: what ``fn(*args)`` or ``fn.map(items)`` would submit, shown and not submitted.

    Validation runs as for a real submit (a bad request raises the same error); nothing is
    written remotely and nothing is recorded in the job registry.
    """

    def __init__(self, function: ClusterFunction) -> None:
        self._function = function

    def __call__(self, *args: Any, **kwargs: Any) -> DryRun:
        """The dry run of one call ``fn(*args, **kwargs)``."""
        return self._function._dry_run([(args, kwargs)])

    def map(self, *iterables: Iterable[Any]) -> DryRun:
        """The dry run of ``fn.map(*iterables)``: one job array, as ``map`` would submit it."""
        arguments = _mapped_arguments(iterables)
        if not arguments:
            raise ValueError("job_script.map() needs at least one item: an empty map submits nothing")
        return self._function._dry_run(arguments)


@overload
def cluster(func: Callable[..., Any], /) -> ClusterFunction: ...


@overload
def cluster(
    func: None = None,
    /,
    *,
    cores: int | None = None,
    memory: str | int | None = None,
    time: str | int | None = None,
    partition: str | None = None,
    queue: str | None = None,
    gpus: int | None = None,
    profile: str | None = None,
    **options: Any,
) -> Callable[[Callable[..., Any]], ClusterFunction]: ...


def cluster(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Run the decorated function on the configured cluster (or the local cores).

    ``@cluster`` and ``@cluster(cores=16, memory="32GB", time="04:00:00")`` both work.
    Resources are validated here, at decoration time: a bad value raises ``ValueError``
    naming the parameter and showing an accepted form. Keywords that are configuration
    keys (``cluster_type="slurm"``, ``executor="thread"``) apply to this function only;
    ``profile="hpc"`` picks a profile of the config file; any other keyword (``account``,
    ``qos``, ``cpu_limit``, ...) is passed to the scheduler plugin.
    """
    resources, overrides, profile = split_options(options)

    def decorate(f: Callable[..., Any]) -> ClusterFunction:
        return ClusterFunction(f, resources=resources, config_overrides=overrides, profile=profile)

    return decorate if func is None else decorate(func)
