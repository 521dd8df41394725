"""A scheduler's own commands on a target: the command check, the site query, one-off queries.

:class:`SchedulerCommands` is the part of :class:`clustrix.batch.engine.BatchScheduler` that asks
the scheduler about itself rather than about jobs: are its commands on the PATH (once per
connection before a submit, and for ``clustrix doctor``), what the site allows
(:class:`~clustrix.batch.dialect.SiteInfo`, once per cluster), and one query run in a report
script (:meth:`SchedulerCommands.query`).
"""

from __future__ import annotations

import secrets
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from clustrix.batch import shell
from clustrix.batch.dialect import Dialect, SiteInfo
from clustrix.batch.reports import QueryOutput, parse_report
from clustrix.batch.submit import COMMAND_TIMEOUT
from clustrix.config.settings import ClusterConfig
from clustrix.errors import ClustrixError, SchedulerCommandError, SchedulerCommandNotFoundError
from clustrix.plugin.transport import Transport
from clustrix.remote.report import run_script_bytes


class SchedulerCommands:
    """The scheduler's commands on a target, for one dialect (the base of the batch engine)."""

    def __init__(self, dialect: Dialect, transport_factory: Callable[[ClusterConfig], Transport]) -> None:
        self.dialect = dialect
        self.name = dialect.name
        self._transport_factory = transport_factory
        self._lock = threading.Lock()
        self._sites: dict[tuple[Any, ...], SiteInfo] = {}
        #: Connections whose scheduler commands were found (:meth:`check_commands_before_submit`).
        self._commands_found: set[tuple[Any, ...]] = set()

    # ---- helpers ------------------------------------------------------------
    def transport(self, config: ClusterConfig) -> Transport:
        """The transport for ``config``: owned by the transport plugin's pool, never cached here."""
        return self._transport_factory(config)

    def _env(self, config: ClusterConfig) -> Mapping[str, str]:
        return self.dialect.command_environment(config)

    def _command(self, argv: Sequence[str], config: ClusterConfig) -> str:
        return shell.command_line(argv, self._env(config))

    def site(self, config: ClusterConfig, transport: Transport) -> SiteInfo:
        """:class:`SiteInfo`, asked once per cluster (and only if the dialect has a site query)."""
        key = (transport.host, *config.connection_key)
        with self._lock:
            info = self._sites.get(key)
        if info is not None:
            return info
        argv = self.dialect.site_argv()
        info = SiteInfo(max_array_size=self.dialect.default_max_array_size)
        if argv is not None:
            output = self.query(transport, self._command(argv, config))
            if output.returncode == 0:
                info = self.dialect.parse_site(output.stdout)
        with self._lock:
            self._sites[key] = info
        return info

    def check_commands(
        self, config: ClusterConfig, transport: Transport, *, submitting: bool = False
    ) -> tuple[str, ...]:
        """Check the dialect's :attr:`~Dialect.commands` with ``command -v`` on the target; return their paths.

        Raises :class:`SchedulerCommandNotFoundError` naming the missing ones and the fix. ``clustrix
        doctor`` asks every time; a submit once per connection (:meth:`check_commands_before_submit`).
        """
        names = self.dialect.commands
        if not names:
            return ()
        probe = "for c in " + " ".join(map(shlex.quote, names)) + '; do command -v "$c"; done'
        script = "\n".join([*shell.render_command_check(names), probe, ""])
        code, out, err = run_script_bytes(transport, script, timeout=COMMAND_TIMEOUT)
        errors = err.decode(errors="replace")
        missing = shell.missing_commands(code, errors)
        if missing:
            raise self.commands_not_found(missing, transport.host, submitting=submitting)
        if code != 0:
            raise SchedulerCommandError(
                f"checking {', '.join(names)} on {transport.host} failed (exit {code}): {errors}"
            )
        return tuple(line for line in out.decode(errors="replace").splitlines() if line)

    def known_site(self, config: ClusterConfig) -> SiteInfo | None:
        """The :class:`SiteInfo` this process already asked for ``config``'s cluster, if any (no I/O)."""
        with self._lock:
            known = [info for key, info in self._sites.items() if key[1:] == config.connection_key]
        return known[0] if known else None

    def check_commands_before_submit(self, config: ClusterConfig, transport: Transport) -> None:
        """:meth:`check_commands` once per connection (a success is remembered), saying nothing was submitted."""
        key = (transport.host, *config.connection_key)
        with self._lock:
            if key in self._commands_found:
                return
        self.check_commands(config, transport, submitting=True)
        with self._lock:
            self._commands_found.add(key)

    def commands_not_found(self, missing: Sequence[str], host: str, *, submitting: bool = False) -> ClustrixError:
        """The error naming the scheduler commands missing on ``host``, where they come from, and the fix."""
        d = self.dialect
        what = " and ".join(", ".join(missing).rsplit(", ", 1))
        them, they = ("it", "it comes") if len(missing) == 1 else ("them", "they come")
        source = f"; {they} with {d.commands_hint}" if d.commands_hint else ""
        done = ". Nothing was submitted." if submitting else ""
        return SchedulerCommandNotFoundError(
            f"{what}: not found on {host} (not on the PATH there); cluster_type={d.name!r} runs {them} to submit "
            f"and watch jobs. Run clustrix where {d.label or d.name}'s commands are (set cluster_host to a login "
            f"node of the cluster), or add their directory to PATH{source}{done}"
        )

    def probe(self, config: ClusterConfig, transport: Transport) -> str:
        """``clustrix doctor``'s check of the scheduler: its commands (:meth:`check_commands`) and its site query.

        Returns what was found, in words; raises naming the missing command or the failed query.
        """
        found = self.check_commands(config, transport)
        text = f"{', '.join(found)} on {transport.host}" if found else f"nothing to check on {transport.host}"
        argv = self.dialect.site_argv()
        if argv is None:
            return text
        output = self.query(transport, self._command(argv, config))
        if output.returncode != 0:
            raise SchedulerCommandError(
                f"{shlex.join(argv)} on {transport.host} failed (exit {output.returncode}): "
                f"{(output.stderr or output.stdout).strip()}"
            )
        info = self.dialect.parse_site(output.stdout)
        return f"{text}; {shlex.join(argv)}: arrays up to {info.max_array_size} tasks"

    def query(self, transport: Transport, command: str) -> QueryOutput:
        marker = secrets.token_hex(6)
        code, out, err = run_script_bytes(
            transport, shell.render_query(command, marker=marker), timeout=COMMAND_TIMEOUT
        )
        report = parse_report(out, marker)
        if report.query is None:
            raise SchedulerCommandError(
                f"running {command!r} on {transport.host} failed (exit {code}): {err.decode(errors='replace').strip()}"
            )
        return report.query
