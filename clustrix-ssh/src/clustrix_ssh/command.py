"""Turning an argv (plus env and cwd) into the one command line an SSH server runs.

SSH carries a single string, which the remote login shell parses: every element is
quoted with :func:`shlex.quote`, so what reaches the program is byte-identical to
the argv. The login shell must be POSIX-like (sh, bash, dash, ksh, zsh).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from clustrix.remote.environment.activation import check_variable_name


def export_lines(env: Mapping[str, str]) -> list[str]:
    """``export NAME='value'`` for each entry, values quoted, names checked."""
    return [f"export {check_variable_name(k)}={shlex.quote(str(v))}" for k, v in env.items()]


def render_command(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None) -> str:
    """The remote command line for ``argv``: ``cd``, exports, then the argv, all quoted."""
    if not argv:
        raise ValueError("cannot run an empty argv")
    for what, values in (("an argv element", argv), ("an environment value", (env or {}).values()), ("cwd", [cwd])):
        if any(value is not None and "\x00" in str(value) for value in values):
            raise ValueError(f"{what} contains a NUL byte, which no remote program can receive")
    parts = []
    if cwd is not None:
        parts.append(f"cd {shlex.quote(cwd)} || exit 125")
    if env:
        parts.extend(export_lines(env))
    parts.append(shlex.join(argv))
    return "; ".join(parts)
