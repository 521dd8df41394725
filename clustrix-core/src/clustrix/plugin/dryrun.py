"""Dry runs: what a submission would send, shown without submitting anything.

``fn.job_script(*args)``, ``fn.job_script.map(items)`` and ``clustrix submit --dry-run``
return a :class:`DryRun`: the exact job script (or Kubernetes manifests) and the exact
command lines a real submit of the same call would use, worked out on this machine by the
same functions the real submit calls. A dry run validates like a submit (a bad request is
the same error), but writes nothing remotely, records nothing in the job registry, and
does not connect: values only the remote side knows are shown as
:data:`REMOTE_HOME` (the remote home directory, where ``~`` would be expanded) or taken
from the configuration, and every such guess is listed in :attr:`DryRun.notes`.

A scheduler plugin shows its dry run through the ``clustrix_dry_run`` hook; a batch
dialect on :class:`clustrix.batch.engine.BatchScheduler` gets it for free.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig

#: Stands for the remote home directory in a dry run to another host (``~`` is expanded there at submit).
REMOTE_HOME = "<REMOTE_HOME>"


@attrs.frozen(kw_only=True)
class DryRun:
    """What a submission would run: the job script and the command lines, plus what is guessed.

    ``str(dry_run)`` is the readable form (what ``clustrix submit --dry-run`` prints);
    :meth:`to_dict` the machine-readable one.
    """

    #: The ``cluster_type`` that would run the job.
    scheduler: str
    #: The job id this dry run used; a real submit gets a new one (it appears in paths and names).
    job_id: str
    #: How many calls the job holds, and how many array tasks (pods, processes) run them.
    calls: int = 1
    tasks: int = 1
    #: The job script (or the manifests) exactly as it would be written; None when there is none.
    script: str | None = None
    #: Where the script would be stored on the remote side (None when it is not a file).
    script_path: str | None = None
    #: What :attr:`script` holds, for the heading (``"job script"``, ``"Kubernetes manifests (YAML)"``).
    script_kind: str = "job script"
    #: The command lines that would run, in order, each as one shell line (``cd`` into the job dir first).
    commands: tuple[str, ...] = ()
    #: What a real submit would do differently or only learns remotely (placeholders, site queries).
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def __str__(self) -> str:
        lines = [f"# dry run: {self.scheduler}, job {self.job_id}, {self.calls} call(s) in {self.tasks} task(s)"]
        lines.append("# nothing was submitted, written remotely or recorded")
        if self.script is not None:
            where = f" ({self.script_path})" if self.script_path else ""
            lines += [f"# ---- {self.script_kind}{where} ----", self.script.rstrip("\n")]
        if self.commands:
            lines += ["# ---- command(s) ----", *self.commands]
        if self.notes:
            lines += ["# ---- notes ----", *(f"# {note}" for note in self.notes)]
        return "\n".join(lines) + "\n"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython and Jupyter show the readable form."""
        printer.text(str(self))


def variables_notes(variables: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """The dry-run note naming the ``environment_variables`` a job gets, values shown as sizes only."""
    if not variables:
        return ()
    from clustrix.config.settings import redacted_variables
    from clustrix.remote.environment.activation import VARIABLES_FILE

    shown = ", ".join(f"{name}={size}" for name, size in redacted_variables(dict(variables)).items())
    return (f"environment_variables, in {VARIABLES_FILE} (0600, sourced by the job; values not shown): {shown}",)


@attrs.frozen
class RemotePaths:
    """How a dry run expands a remote path without connecting, and the note that says so."""

    expand: Callable[[str], str]
    notes: tuple[str, ...] = ()


def remote_paths(config: ClusterConfig) -> RemotePaths:
    """Expand ``~`` here when the scheduler runs on this machine, else to :data:`REMOTE_HOME`."""
    from clustrix.plugin.manager import is_local_host
    from clustrix.plugin.transport import LocalTransport

    if is_local_host(config):
        return RemotePaths(LocalTransport().expand)
    host = config.get("cluster_host")

    def expand(path: str) -> str:
        if path == "~" or path.startswith("~/"):
            return posixpath.join(REMOTE_HOME, path[2:]) if path != "~" else REMOTE_HOME
        return path

    note = f"{REMOTE_HOME} stands for the home directory on {host}: a real submit expands ~ there"
    return RemotePaths(expand, (note,))
