"""The remote interpreter: which ``python`` a job runs, the checks of its version and imports, and their failures.

The checks are shell lines (pure) that print a ``clustrix-env:`` line on stderr and exit with
:data:`MISMATCH_EXIT` or :data:`BUILD_FAILED_EXIT`; :func:`interpret_failure` turns that
report into the error the user sees.
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from clustrix.errors import EnvironmentBuildError, PythonVersionMismatchError
from clustrix.remote.scripts import SAFE_SYS_PATH

if TYPE_CHECKING:
    from clustrix.plugin.transport import Transport

MISMATCH_EXIT = 42
BUILD_FAILED_EXIT = 43


def render_version_check(python: str, expected: str | None, *, allow_mismatch: bool) -> str:
    """Shell that exits ``MISMATCH_EXIT`` naming both versions if ``python`` is not ``expected``."""
    if not expected or allow_mismatch:
        return (
            f"command -v {python} >/dev/null 2>&1 || "
            f"{{ printf 'clustrix-env: no %s on PATH\\n' {python} >&2; exit {BUILD_FAILED_EXIT}; }}"
        )
    probe = shlex.quote("import sys; print('%d.%d' % sys.version_info[:2])")
    return "\n".join(
        [
            f"remote_version=$({python} -I -c {probe} 2>/dev/null) || remote_version=none",
            f'if [ "$remote_version" != {shlex.quote(expected)} ]; then',
            "  printf 'clustrix-env: python-mismatch remote=%s local=%s python=%s\\n' "
            f'"$remote_version" {shlex.quote(expected)} {python} >&2',
            f"  exit {MISMATCH_EXIT}",
            "fi",
        ]
    )


#: What a job's Python must import: the runner (``python -m clustrix.remote.runner``) and cloudpickle,
#: which loads the pickled call. A plugin that ships the runner file needs only cloudpickle.
RUNNER_MODULES = ("clustrix.remote.runner", "cloudpickle")


def render_import_check(python: str, modules: Sequence[str] = RUNNER_MODULES) -> str:
    """Shell that exits ``BUILD_FAILED_EXIT``, naming ``python`` and its error, if it cannot import ``modules``."""
    return (
        f"import_error=$({python} -c {shlex.quote(SAFE_SYS_PATH + '; import ' + ', '.join(modules))} 2>&1 >/dev/null) "
        "|| "
        f"{{ printf 'clustrix-env: cannot-import python=%s\\n%s\\n' {python} \"$import_error\" >&2; "
        f"exit {BUILD_FAILED_EXIT}; }}"
    )


def interpret_failure(stderr: str, expected: str | None) -> Exception:
    """The error for a failed check or build, from the ``clustrix-env:`` report on its ``stderr``.

    ``expected`` is this Python's major.minor. A refused directory is raised before this is
    asked (:func:`clustrix.remote.scripts.run_checked`).
    """
    if "clustrix-env: python-mismatch" in stderr:
        found = re.search(r"remote=(\S+) local=(\S+) python=(\S+)", stderr)
        remote, local, python = found.groups() if found else ("?", expected, "python3")
        return PythonVersionMismatchError(
            f"the remote {python} is Python {remote} but this Python is {local}: pickled functions and results may "
            f"not load across versions, so nothing was submitted. Point python_executable= at a Python {local} on "
            f"the remote side (or load one with module_loads= / conda_env_name=), or set allow_python_mismatch=True "
            f"to try anyway."
        )
    if "clustrix-env: cannot-import python=" in stderr:
        _, _, rest = stderr.partition("clustrix-env: cannot-import python=")
        python, _, error = rest.partition("\n")
        reason = error.strip().splitlines()[-1] if error.strip() else "no error text"
        version = importlib.metadata.version("clustrix-core")
        return EnvironmentBuildError(
            f"the remote Python {python} cannot run clustrix jobs ({reason}), so nothing was submitted. Install "
            f"clustrix-core in it (pip install 'clustrix-core=={version}'), or leave python_executable unset so "
            f"clustrix builds a venv replicating this environment."
        )
    return EnvironmentBuildError(f"building the remote environment failed:\n{stderr.strip()[-4000:]}")


def remote_python(transport: Transport, python_executable: str | None) -> str:
    """The interpreter a job runs: ``python_executable`` with a leading ``~`` expanded on the remote side."""
    return python_path(python_executable, transport.expand)


def python_path(python_executable: str | None, expand: Callable[[str], str]) -> str:
    """``python_executable`` (default ``python3``) with a leading ``~`` expanded by ``expand``."""
    python = python_executable or "python3"
    return expand(python) if python.startswith("~") else python
