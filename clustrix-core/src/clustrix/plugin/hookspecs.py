"""Hook specifications: the contract between clustrix core and its plugins.

Two kinds of hook live here.

*Broadcast hooks* are called on every installed plugin: registering schedulers,
declaring configuration keys, capturing the environment, observing submissions.

*Scheduler hooks* (``clustrix_submit``, ``clustrix_poll``, ``clustrix_fetch``,
``clustrix_cancel``, ``clustrix_read_logs``, and the optional ``clustrix_dry_run`` and
``clustrix_remove_job_dir``) are routed: core calls only the scheduler object registered
under the configured ``cluster_type`` (plus any hook *wrappers* that other plugins add
around them, e.g. for accounting or credentials). A scheduler is a
:class:`clustrix.plugin.types.Scheduler`: an object whose methods are hook implementations
of these specs and which declares its capabilities; it never has to ask "is this job mine?".

Hook implementations may accept fewer arguments than the spec names, so specs can grow
without breaking plugins.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse

    from clustrix.config.settings import ClusterConfig
    from clustrix.plugin.dryrun import DryRun
    from clustrix.plugin.transport import Transport
    from clustrix.plugin.types import JobHandle, JobSpec, JobStatus, Outcome

PROJECT_NAME = "clustrix"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

# -------------------------------------------------------------------------
# Broadcast hooks
# -------------------------------------------------------------------------


@hookspec
def clustrix_register_schedulers(register: Callable[[str, object], None]) -> None:
    """Register the schedulers this plugin provides.

    Call ``register(name, scheduler)`` once per scheduler; ``name`` is the value users
    give as ``cluster_type`` and ``scheduler`` a :class:`clustrix.plugin.types.Scheduler`:
    the scheduler hooks as methods, and the declared capabilities (``needs_environment``,
    ``persistent``, ``python_needs``, ``resource_keys``). Core rejects duplicate names and
    a scheduler that lacks a member, naming it.

    :param register: the callback that records a scheduler.
    """


@hookspec
def clustrix_config_keys() -> Mapping[str, Any] | None:
    """Declare configuration keys this plugin understands, each with its type, default and meaning.

    Keys declared here are accepted by ``configure()``, profiles and ``CLUSTRIX_*``
    environment variables; any other unknown key is an error naming it. A value of
    another type than the declared one is refused naming the key, the type and where
    the value came from; the configuration reference lists every declared key.

    :return: a mapping of key to :class:`clustrix.config.keys.ConfigKey` (a bare default
        value is still taken, its type being the default's), or None.
    """


@hookspec
def clustrix_capture_environment(config: ClusterConfig) -> Mapping[str, Any] | None:
    """Describe the local software environment, so a remote side can rebuild it.

    Every plugin may contribute (Python and pip distributions in core, conda, modules);
    core merges the returned mappings into one snapshot, passed to schedulers as
    ``JobSpec.environment``. Called once per resolved configuration, not per call.

    :param config: the resolved configuration of the job about to be submitted.
    :return: a mapping of snapshot entries, or None.
    """


@hookspec
def clustrix_job_submitted(spec: JobSpec, handle: JobHandle) -> None:
    """Observe a job that a scheduler accepted (logging, accounting, registries).

    :param spec: what was submitted.
    :param handle: what the scheduler returned.
    """


@hookspec(firstresult=True)
def clustrix_make_transport(config: ClusterConfig) -> Transport | None:
    """Return a transport that reaches ``config.cluster_host`` (e.g. over SSH).

    Core calls this only when ``cluster_host`` names another machine; with no host (or
    ``localhost``) batch schedulers use :class:`clustrix.plugin.transport.LocalTransport`.
    ``clustrix-ssh`` implements it; a site could add another way in.

    Stops at first non-None result.

    :param config: the resolved configuration.
    """


@hookspec
def clustrix_cli_commands(
    add: Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser],
) -> None:
    """Add commands to the ``clustrix`` command line (``clustrix login`` comes from clustrix-ssh).

    Call ``add(name, func, help)`` once per command. It returns the command's
    :class:`argparse.ArgumentParser`, with ``--json`` already added, for the command's own
    arguments; ``func(args)`` runs the command and returns its exit code. Core refuses a name
    that is taken (by core or another plugin), naming it.

    :param add: the callback that adds one command.
    """


@hookspec
def clustrix_doctor_checks(config: ClusterConfig) -> Sequence[tuple[str, Callable[[], object]]] | None:
    """Checks ``clustrix doctor`` runs before it connects, e.g. how the host is reached and why.

    Each check is ``(name, func)``: ``func()`` returns what is shown on an ``[ok]`` line, or
    ``("warn", text)`` for a finding that does not fail the doctor, or raises for a failure.

    :param config: the resolved configuration.
    :return: the checks, in the order they run, or None.
    """


# -------------------------------------------------------------------------
# Scheduler hooks (routed to the scheduler named by ``cluster_type``)
# -------------------------------------------------------------------------


@hookspec(firstresult=True)
def clustrix_submit(spec: JobSpec, wake: Callable[[], None]) -> JobHandle | None:
    """Submit a job: one call, or ``spec.size`` calls as one array.

    Validate ``spec.resources`` first and raise ``ValueError`` naming the parameter for
    a request this scheduler cannot express. Return quickly: completion is found by
    ``clustrix_poll``. A scheduler that learns of completion by itself (a local pool,
    a watch) may call ``wake()`` to make core poll at once instead of at its interval.

    Stops at first non-None result.

    :param spec: the job to submit.
    :param wake: asks core's poller to poll this scheduler now.
    :return: the handle that identifies the job from now on.
    """


@hookspec(firstresult=True)
def clustrix_poll(handles: Sequence[JobHandle], config: ClusterConfig) -> Mapping[str, JobStatus] | None:
    """Report the state of many jobs in one call (one scheduler query, never one per job).

    Core calls this once per poll round with every unfinished job of this scheduler.
    A plugin should check result files before asking the scheduler.

    Stops at first non-None result.

    :param handles: the jobs to report on; all of them share one connection (host, port, user).
    :param config: the configuration they were submitted with (core polls together only
        jobs whose scheduler, host, port, user, key, known_hosts file, host-key policy and
        ``remote_work_dir`` agree, and passes the first one's configuration).
    :return: a mapping of ``handle.job_id`` to status; a missing job id means "unknown
        this round" and is asked again later.
    """


@hookspec(firstresult=True)
def clustrix_fetch(handle: JobHandle, config: ClusterConfig) -> Sequence[Outcome | None] | None:
    """Bring back the outcomes of a finished job, one per call in submission order.

    An entry is None where that call wrote no result (killed, timed out, lost); core
    then raises the :class:`clustrix.JobError` matching the job's final state.

    Stops at first non-None result.

    :param handle: a job whose state is final.
    :param config: the configuration it was submitted with.
    """


@hookspec(firstresult=True)
def clustrix_cancel(handle: JobHandle, config: ClusterConfig) -> bool | None:
    """Cancel a job, pending or running.

    Stops at first non-None result.

    :param handle: the job to cancel.
    :param config: the configuration it was submitted with.
    :return: True once the scheduler accepted the cancellation.
    """


@hookspec(firstresult=True)
def clustrix_read_logs(handle: JobHandle, config: ClusterConfig, stream: str) -> str | None:
    """Return the job's captured ``"stdout"`` or ``"stderr"`` text so far.

    Stops at first non-None result.

    :param handle: the job.
    :param config: the configuration it was submitted with.
    :param stream: ``"stdout"`` or ``"stderr"``.
    """


@hookspec(firstresult=True)
def clustrix_dry_run(spec: JobSpec) -> DryRun | None:
    """Show what submitting ``spec`` would run, without submitting: the job script and command lines.

    Optional: a scheduler without it answers ``fn.job_script()`` with an error naming it.
    Validate as :func:`clustrix_submit` does (the same ``ValueError`` for the same bad
    request), then return a :class:`clustrix.plugin.dryrun.DryRun` built by the same functions the
    submit uses. Write nothing remotely, create nothing, and avoid connecting: show values
    only the remote side knows as placeholders and say so in ``DryRun.notes``. Never put
    secrets (payload contents, tokens, passwords) in it.

    Stops at first non-None result.

    :param spec: the job that would be submitted.
    :return: the dry run.
    """


@hookspec(firstresult=True)
def clustrix_remove_job_dir(handle: JobHandle, config: ClusterConfig) -> bool | None:
    """Delete a finished job's directory (``cleanup_on_success``, once every call's result is home).

    Optional: a scheduler that keeps no directory (the local executor) leaves it out.
    Remove only the directory this job was given (its ``handle.job_dir``, named after
    ``handle.job_id``), never a parent. A failure is logged by core; the results are home.

    Stops at first non-None result.

    :param handle: a job whose state is final and whose calls all succeeded.
    :param config: the configuration it was submitted with.
    :return: True once the directory is gone.
    """
