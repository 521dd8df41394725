"""The job's shell before its Python starts: modules, conda, the user's commands, variables, ``PYTHONPATH``.

The functions are pure: every backend that runs a shell script (the plain ``ssh`` backend, a
batch scheduler's job script) renders the same lines. :class:`RemoteEnvironment` is what
preparing a remote returns (:mod:`clustrix.remote.environment.prepare`): the job's python and
these lines, with the values of ``environment_variables`` kept out of every script (they go
to the job's private :data:`VARIABLES_FILE`).
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from clustrix.errors import ConfigurationError

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig


def check_variable_name(name: str, what: str = "environment variable name") -> str:
    """Return ``name`` if it is a valid shell variable name, else raise ``ConfigurationError`` naming it."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ConfigurationError(f"{what} {name!r} is not a valid variable name: use letters, digits and '_'")
    return name


def activation_lines(
    *,
    module_loads: Sequence[str] = (),
    conda_env_name: str | None = None,
    pre_execution_commands: Sequence[str] = (),
    environment_variables: Mapping[str, str] | None = None,
) -> list[str]:
    """Shell lines that prepare a job's shell: modules, conda, the user's commands, variables.

    Module and conda names and every variable value are quoted; ``pre_execution_commands``
    are the user's own shell code and are used as written.
    """
    for line in pre_execution_commands:
        if "\n" in line:
            raise ConfigurationError(f"{line!r} spans several lines: give one command per list item")
    lines = [f"module load {shlex.quote(name)}" for name in module_loads]
    if conda_env_name:
        lines.append('. "$(conda info --base)/etc/profile.d/conda.sh"')
        lines.append(f"conda activate {shlex.quote(conda_env_name)}")
    lines.extend(pre_execution_commands)
    lines.extend(variable_exports(environment_variables or {}))
    return lines


#: The file in the job directory that holds the values of ``environment_variables`` (0600,
#: staged with the job): job scripts source it, so no value is ever in a script a scheduler
#: copies to its spool, nor in a process's arguments.
VARIABLES_FILE = "variables.sh"


def variable_exports(variables: Mapping[str, str]) -> list[str]:
    """``export NAME='value'`` lines for ``variables`` (names checked, values quoted)."""
    return [
        f"export {check_variable_name(key, 'environment_variables key')}={shlex.quote(str(value))}"
        for key, value in variables.items()
    ]


def source_variables_line(job_dir: str) -> str:
    """The prelude line that loads the job's :data:`VARIABLES_FILE` from ``job_dir``."""
    return f". {shlex.quote(posixpath.join(job_dir, VARIABLES_FILE))}"


def activation_from_config(config: ClusterConfig | Mapping[str, Any]) -> list[str]:
    get = config.get
    return activation_lines(
        module_loads=get("module_loads") or (),
        conda_env_name=get("conda_env_name"),
        pre_execution_commands=get("pre_execution_commands") or (),
        environment_variables=get("environment_variables") or {},
    )


def base_selection(config: ClusterConfig | Mapping[str, Any]) -> list[str]:
    """The activation lines that can change which ``python3`` builds the venv (not plain variables)."""
    return activation_lines(
        module_loads=config.get("module_loads") or (),
        conda_env_name=config.get("conda_env_name"),
        pre_execution_commands=config.get("pre_execution_commands") or (),
    )


def pythonpath_line(paths: Sequence[str]) -> str | None:
    """``export PYTHONPATH=...`` putting ``paths`` (quoted) before any existing entries."""
    if not paths:
        return None
    joined = ":".join(shlex.quote(p) for p in paths)
    return f'export PYTHONPATH={joined}"${{PYTHONPATH:+:$PYTHONPATH}}"'


@attrs.frozen
class RemoteEnvironment:
    """How a job runs in the replicated environment: a python, and shell lines to run first.

    ``prelude`` holds no value of ``environment_variables``: those are in ``variables`` (never
    shown by ``repr``), written to the job's private :data:`VARIABLES_FILE` and sourced by the
    job at ``variables_at`` in its prelude (:meth:`job_prelude`): after the modules, conda and
    ``pre_execution_commands``, before the ``PYTHONPATH`` lines.
    """

    python: str
    prelude: tuple[str, ...] = ()
    built: bool = False  # True if this call built the venv (not merely found it)
    variables: tuple[tuple[str, str], ...] = attrs.field(default=(), repr=False)
    variables_at: int = 0
    #: the wheels this call sent to a host that reaches no index (file names), and their bytes
    shipped_wheels: tuple[str, ...] = ()
    shipped_bytes: int = 0

    def job_prelude(self, job_dir: str) -> tuple[str, ...]:
        """The prelude of a job in ``job_dir``: ``prelude`` with the variables file sourced in its place."""
        if not self.variables:
            return self.prelude
        at = self.variables_at
        return (*self.prelude[:at], source_variables_line(job_dir), *self.prelude[at:])

    def check_prelude(self) -> tuple[str, ...]:
        """The prelude of a check that runs before the job's directory exists (the shipped code's import check).

        The variables are exported in place, in the text of the check's script, which travels on
        stdin (:func:`clustrix.remote.scripts.run_script`): in no file and no process's arguments.
        """
        if not self.variables:
            return self.prelude
        at = self.variables_at
        return (*self.prelude[:at], *variable_exports(dict(self.variables)), *self.prelude[at:])

    def variables_file(self) -> bytes:
        """The text of the job's :data:`VARIABLES_FILE` (empty when there are no variables)."""
        return "".join(line + "\n" for line in variable_exports(dict(self.variables))).encode()


def job_environment(
    config: ClusterConfig | Mapping[str, Any], python: str, path_line: str | None = None, *, built: bool = False
) -> RemoteEnvironment:
    """The :class:`RemoteEnvironment` of ``config`` with ``python``: activation, then ``path_line``."""
    base = base_selection(config)
    variables = tuple((str(k), str(v)) for k, v in (config.get("environment_variables") or {}).items())
    prelude = (*base, path_line) if path_line else tuple(base)
    return RemoteEnvironment(python=python, prelude=prelude, built=built, variables=variables, variables_at=len(base))
