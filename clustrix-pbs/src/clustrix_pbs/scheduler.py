"""The ``pbs`` scheduler: the batch engine of clustrix core, speaking PBS Pro or Torque per host.

The flavour is the ``pbs_flavor`` configuration key (or resource option) when given,
else detected once per host and connection from ``qstat --version`` (PBS Pro prints
``pbs_version = ...``). Each flavour has its own
:class:`~clustrix.batch.engine.BatchScheduler`; a job's handle remembers its flavour, so
poll, fetch, cancel and logs go to the same one, also from another process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from clustrix.batch.engine import BatchScheduler
from clustrix.batch.submit import JOB_NEEDS
from clustrix.errors import ConfigurationError, ParseError
from clustrix.plugin.dryrun import DryRun
from clustrix.plugin.hookspecs import hookimpl
from clustrix.plugin.manager import transport_for
from clustrix.plugin.transport import Transport
from clustrix.plugin.types import JobHandle, JobSpec, JobStatus, Outcome
from clustrix_pbs.dialect import DIALECTS
from clustrix_pbs.directives import EXTRA_KEYS
from clustrix_pbs.parse import Flavour, detect_flavour

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig

#: ``JobHandle.data`` key holding the flavour a job was submitted with.
FLAVOR_KEY = "pbs_flavor"


def configured_flavour(config: ClusterConfig, spec_extra: Mapping[str, Any] | None = None) -> Flavour | None:
    """``pbs_flavor`` from the resources or the configuration; ``ValueError`` naming it when invalid."""
    value = (spec_extra or {}).get("pbs_flavor") or config.get("pbs_flavor")
    if value is None:
        return None
    try:
        return Flavour(str(value).lower())
    except ValueError:
        raise ConfigurationError(f"pbs_flavor={value!r} is not valid: use 'pbspro' or 'torque'") from None


class PBSScheduler:
    """``cluster_type="pbs"``: one batch engine per flavour, chosen per job."""

    name = "pbs"
    needs_environment = True
    persistent = True
    python_needs = JOB_NEEDS  # the runner file ships with each job, as for every batch scheduler
    resource_keys = EXTRA_KEYS  # every flavour's dialect has these extras
    holds_dependencies = True  # both flavours' dialects give -W depend= (futures as arguments)

    def __init__(
        self, transport_factory: Callable[[ClusterConfig], Transport] = transport_for, *, forced: Flavour | None = None
    ) -> None:
        self._transport_factory = transport_factory
        #: ``cluster_type="torque"`` is this scheduler with the flavour fixed
        self.forced = forced
        if forced is not None:
            self.name = forced.value if forced is Flavour.TORQUE else "pbs"
        self.engines = {
            flavour: BatchScheduler(dialect(), transport_factory=transport_factory)
            for flavour, dialect in DIALECTS.items()
        }
        self._lock = threading.Lock()
        self._detected: dict[tuple[Any, ...], Flavour] = {}

    def flavour(self, config: ClusterConfig, extra: Mapping[str, Any] | None = None) -> Flavour:
        """The configured flavour, else the one ``qstat --version`` shows (asked once per host)."""
        chosen = self.forced or configured_flavour(config, extra)
        if chosen is not None:
            return chosen
        transport = self._transport_factory(config)
        key = (transport.host, *config.connection_key)
        with self._lock:
            known = self._detected.get(key)
        if known is not None:
            return known
        try:
            result = transport.run(["qstat", "--version"], timeout=60)
        except FileNotFoundError:  # the local transport runs argv itself
            result = None
        if result is None or result.returncode == 127:  # no qstat here: name what is missing and the fix
            engine = self.engines[Flavour.PBSPRO]
            engine.check_commands(config, transport, submitting=True)
            raise engine.commands_not_found(["qstat"], transport.host, submitting=True)
        try:
            found = detect_flavour(result.stdout + result.stderr)
        except ParseError as error:
            raise ConfigurationError(
                f"cannot tell which PBS runs on {transport.host}: {error}; set pbs_flavor='pbspro' or 'torque'"
            ) from error
        with self._lock:
            self._detected[key] = found
        return found

    def probe(self, config: ClusterConfig, transport: Transport) -> str:
        """``clustrix doctor``'s check: PBS's commands, the flavour, and the flavour's site query."""
        self.engines[Flavour.PBSPRO].check_commands(config, transport)
        flavour = self.flavour(config)
        return f"{flavour.value}: {self.engines[flavour].probe(config, transport)}"

    def _engine(self, handle: JobHandle) -> BatchScheduler:
        return self.engines[Flavour(handle.data.get(FLAVOR_KEY, Flavour.PBSPRO.value))]

    @hookimpl
    def clustrix_submit(self, spec: JobSpec, wake: Callable[[], None]) -> JobHandle:
        flavour = self.flavour(spec.config, spec.resources.extra)
        handle = self.engines[flavour].clustrix_submit(spec, wake)
        return attrs.evolve(handle, data={**handle.data, FLAVOR_KEY: flavour.value})

    @hookimpl
    def clustrix_dry_run(self, spec: JobSpec) -> DryRun:
        """The flavour's engine shows the script; an unconfigured flavour is one this process detected, else PBS Pro."""
        flavour = self.forced or configured_flavour(spec.config, spec.resources.extra)
        note = None
        if flavour is None:
            transport_key = spec.config.connection_key
            with self._lock:
                known = [found for key, found in self._detected.items() if key[1:] == transport_key]
            flavour = known[0] if known else Flavour.PBSPRO
            if not known:
                note = (
                    "pbs_flavor is not set: a real submit asks qstat --version which PBS runs there; shown for "
                    "PBS Pro (set pbs_flavor='torque' to see the Torque script)"
                )
        shown = self.engines[flavour].clustrix_dry_run(spec)
        return attrs.evolve(shown, scheduler=self.name, notes=(*shown.notes, *([note] if note else [])))

    @hookimpl
    def clustrix_poll(self, handles: Sequence[JobHandle], config: ClusterConfig) -> Mapping[str, JobStatus]:
        statuses: dict[str, JobStatus] = {}
        for engine in self.engines.values():
            mine = [h for h in handles if self._engine(h) is engine]
            if mine:
                statuses.update(engine.clustrix_poll(mine, config))
        return statuses

    @hookimpl
    def clustrix_fetch(self, handle: JobHandle, config: ClusterConfig) -> Sequence[Outcome | None]:
        return self._engine(handle).clustrix_fetch(handle, config)

    @hookimpl
    def clustrix_cancel(self, handle: JobHandle, config: ClusterConfig) -> bool:
        return self._engine(handle).clustrix_cancel(handle, config)

    @hookimpl
    def clustrix_read_logs(self, handle: JobHandle, config: ClusterConfig, stream: str) -> str:
        return self._engine(handle).clustrix_read_logs(handle, config, stream)

    def resubmit(
        self, handle: JobHandle, config: ClusterConfig, calls: Sequence[int], *, unless_cancelled: bool = False
    ) -> JobHandle:
        """Run ``calls`` of a finished job again, in the same job (``retries``, ``clustrix retry``)."""
        return self._engine(handle).resubmit(handle, config, calls, unless_cancelled=unless_cancelled)

    @hookimpl
    def clustrix_remove_job_dir(self, handle: JobHandle, config: ClusterConfig) -> bool:
        return self._engine(handle).clustrix_remove_job_dir(handle, config)
