"""Preparing a remote: make the replicated environment exist there (once per process), or plan it for a dry run.

The one module here that does I/O through a transport: it runs the interpreter checks
(:mod:`~clustrix.remote.environment.interpreter`) or the venv build script
(:mod:`~clustrix.remote.environment.venv`), sending the wheels it asks for
(:mod:`~clustrix.remote.environment.wheels`), and returns the
:class:`~clustrix.remote.environment.activation.RemoteEnvironment` a job runs in.
"""

from __future__ import annotations

import posixpath
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from clustrix.log import get_logger
from clustrix.remote import scripts as remote_script
from clustrix.remote.environment.activation import (
    RemoteEnvironment,
    activation_from_config,
    base_selection,
    job_environment,
    pythonpath_line,
)
from clustrix.remote.environment.interpreter import (
    RUNNER_MODULES,
    EnvironmentBuildError,
    interpret_failure,
    python_path,
    remote_python,
    render_import_check,
    render_version_check,
)
from clustrix.remote.environment.target import Target, parse_target
from clustrix.remote.environment.venv import (
    NEED_WHEELS_EXIT,
    environment_key,
    overlay_dir,
    render_build_script,
    requirements,
    venv_python,
)
from clustrix.remote.environment.wheelhouse import (
    WHEELHOUSE,
    IndexWheel,
    download_wheels,
    index_environment,
    no_wheel_error,
)
from clustrix.remote.environment.wheels import build_local_wheel, local_distributions

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig
    from clustrix.plugin.transport import Transport

log = get_logger("clustrix.remote.environment")

_prepared: dict[tuple[Any, ...], RemoteEnvironment] = {}
_prepared_lock = threading.Lock()
#: What the probe found per host (its wheel tags, whether it reaches the index): asked once per process.
_targets: dict[tuple[Any, ...], Target] = {}


def forget_prepared() -> None:
    """Forget which remotes were prepared in this process, and what their probes found (tests)."""
    with _prepared_lock:
        _prepared.clear()
        _targets.clear()


def planned_remote_environment(
    config: ClusterConfig, snapshot: Mapping[str, Any] | None, expand: Callable[[str], str]
) -> RemoteEnvironment:
    """What :func:`prepare_remote_environment` would return, worked out here without connecting (dry runs).

    ``expand`` stands in for the transport's ``~`` expansion. The venv is not built nor checked.
    """
    activation_from_config(config)  # bad variable names or commands: refused as a submit would
    explicit = config.get("python_executable")
    if explicit or not (snapshot or {}).get("distributions"):
        return job_environment(config, python_path(explicit, expand))
    work_dir = expand(config.get("remote_work_dir") or "~/.clustrix")
    key = environment_key(snapshot or {}, base_selection(config))
    path_line = pythonpath_line([overlay_dir(work_dir, d) for d in local_distributions(snapshot or {})])
    return job_environment(config, venv_python(work_dir, key), path_line)


def prepare_remote_environment(
    transport: Transport,
    config: ClusterConfig,
    snapshot: Mapping[str, Any] | None,
    *,
    needs: Sequence[str] = RUNNER_MODULES,
) -> RemoteEnvironment:
    """Make the replicated environment exist on ``transport``'s host; return how to use it.

    Runs at most one remote script per (host, environment, settings) in this process.
    With ``python_executable`` set, that interpreter is used as it is, after checking its
    version and that it imports the modules in ``needs``; with an empty snapshot,
    ``python3`` is (checked the same way).
    """
    activation = activation_from_config(config)
    expected = (snapshot or {}).get("python")
    allow = bool(config.get("allow_python_mismatch"))
    explicit = config.get("python_executable")
    locals_ = local_distributions(snapshot or {})
    cache_key = (
        transport.host,
        config.get("cluster_port"),
        config.get("username"),
        config.get("remote_work_dir"),
        explicit,
        tuple(activation),
        allow,
        (snapshot or {}).get("hash"),
        tuple((d["name"], d.get("digest")) for d in locals_),
        tuple(needs),
        config.get("remote_index"),
        tuple(sorted(index_environment(config).items())),
    )
    with _prepared_lock:
        if cache_key in _prepared:
            return _prepared[cache_key]

    if explicit or not (snapshot or {}).get("distributions"):
        python = remote_python(transport, explicit)
        quoted = shlex.quote(python)
        checks = [render_version_check(quoted, expected, allow_mismatch=allow), render_import_check(quoted, needs)]
        work_dir = transport.expand(config.get("remote_work_dir") or "~/.clustrix")
        # the checks run in the checked work dir (or /), never in the caller's (possibly shared) directory
        script = "\n".join(
            [remote_script.CHECK_FUNCTIONS, *remote_script.render_enter_work_dir(work_dir), *activation, *checks]
        )
        remote_script.run_checked(transport, script, failure=lambda result: interpret_failure(result.stderr, expected))
        prepared = job_environment(config, python)
    else:
        prepared = _build(transport, config, snapshot or {}, activation, expected, allow, locals_)
    with _prepared_lock:
        _prepared[cache_key] = prepared
    return prepared


def _probe_mode(config: ClusterConfig, known: Target | None) -> str | None:
    """How the build script asks about the index: ``check`` it, only the ``tags``, or not at all (None)."""
    mode = config.get("remote_index") or "auto"
    if mode == "reachable" or (mode == "auto" and known is not None and known.reachable):
        return None
    return "tags" if mode == "none" or (known is not None and known.reachable is False) else "check"


def _build(
    transport: Transport,
    config: ClusterConfig,
    snapshot: Mapping[str, Any],
    activation: list[str],
    expected: str | None,
    allow: bool,
    locals_: list[Mapping[str, Any]],
) -> RemoteEnvironment:
    work_dir = transport.expand(config.get("remote_work_dir") or "~/.clustrix")
    key = environment_key(snapshot, base_selection(config))
    wheels = {}
    overlays: list[tuple[str, str]] = []
    built_here = []
    for wheel in (build_local_wheel(d) for d in locals_):
        remote_wheel = posixpath.join(work_dir, "wheels", wheel.label, wheel.path.name)
        wheels[wheel.label] = (remote_wheel, wheel.path)
        built_here.append(wheel)
        overlays.append((remote_wheel, overlay_dir(work_dir, {"name": wheel.name, "digest": wheel.digest})))
    log.info(
        "clustrix.environment_check", host=transport.host, key=key, distributions=len(snapshot.get("distributions", []))
    )
    host_key = (transport.host, config.get("cluster_port"), config.get("username"), config.get("pip_index_url"))
    with _prepared_lock:
        known = _targets.get(host_key)
    probe = _probe_mode(config, known)
    wheelhouse = posixpath.join(work_dir, WHEELHOUSE)
    reqs = requirements(snapshot)
    common: dict[str, Any] = {
        "work_dir": work_dir,
        "key": key,
        "python_version": expected,
        "activation": activation,
        "allow_mismatch": allow,
        "overlays": overlays,
        "index_url": str(config.get("pip_index_url") or ""),
        "index_environment": index_environment(config),
    }
    script = render_build_script(
        requirement_lines=reqs, probe=probe, wheelhouse=wheelhouse if probe else None, **common
    )
    result = remote_script.run_checked(transport, script)
    target = parse_target(result.stdout)
    if target is not None and probe == "check":  # the same answer for every environment on this host
        with _prepared_lock:
            _targets[host_key] = target
    sent: list[IndexWheel] = []
    if result.returncode == NEED_WHEELS_EXIT:
        lines = result.stdout.splitlines()
        needed = [line.split(" ", 2)[2] for line in lines if line.startswith("clustrix-env: need-wheel ")]
        shipped = [wheels[label] for label in needed if label in wheels]
        index_paths: list[str] = []
        if target is not None and "clustrix-env: index unreachable" in lines:
            downloaded, refused = download_wheels(reqs, target, config, host=transport.host)
            foreign = [w.name for w in built_here if not target.accepts(w.path.name)]
            if refused or foreign:
                raise no_wheel_error(refused, target, transport.host, local=foreign)
            have = {line.split(" ", 2)[2] for line in lines if line.startswith("clustrix-env: have ")}
            index_paths = [w.remote_path(work_dir) for w in downloaded]
            sent = [w for w in downloaded if w.remote_path(work_dir) not in have]
        script = render_build_script(
            requirement_lines=reqs,
            shipped=[(remote, path.stat().st_size) for remote, path in shipped],
            wheelhouse=wheelhouse if index_paths else None,
            index_wheels=index_paths,
            received=[(w.remote_path(work_dir), w.sha256, w.path.stat().st_size) for w in sent],
            **common,
        )
        data = b"".join([*(path.read_bytes() for _, path in shipped), *(w.path.read_bytes() for w in sent)])
        # the wheels go in the same command that checked the directories they are written to
        result = remote_script.run_checked(transport, script, data, timeout=3600)
        if index_paths:
            log.info(
                "clustrix.wheels_shipped",
                host=transport.host,
                sent=len(sent),
                reused=len(index_paths) - len(sent),
                bytes=sum(w.path.stat().st_size for w in sent),
            )
    if not result.ok:
        if result.returncode == NEED_WHEELS_EXIT:
            raise EnvironmentBuildError(f"the remote side still asks for wheels after they were sent:\n{result.stdout}")
        raise interpret_failure(result.stderr, expected)
    ready = [line for line in result.stdout.splitlines() if line.startswith("clustrix-env: ready ")]
    if not ready:
        raise EnvironmentBuildError(
            f"the environment script printed no ready line:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    path_line = pythonpath_line([target for _, target in overlays])
    built = "clustrix-env: built" in result.stdout
    prepared = job_environment(config, ready[-1].split(" ", 2)[2], path_line, built=built)
    return attrs.evolve(
        prepared,
        shipped_wheels=tuple(w.path.name for w in sent),
        shipped_bytes=sum(w.path.stat().st_size for w in sent),
    )
