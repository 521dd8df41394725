"""The ``clustrix`` command itself: its parser, ``main`` (the console script), errors and closed pipes.

Every command takes ``--json`` for machine-readable output. The commands live next to this
module: :mod:`~clustrix.cli.jobs`, :mod:`~clustrix.cli.doctor`, :mod:`~clustrix.cli.preview`;
``config show`` and ``plugins`` are here.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from clustrix.cli.doctor import cmd_doctor
from clustrix.cli.jobs import cmd_cancel, cmd_jobs, cmd_logs, cmd_result, cmd_retry, cmd_status
from clustrix.cli.output import emit
from clustrix.cli.preview import cmd_code, cmd_submit
from clustrix.config.settings import config_path, get_config
from clustrix.errors import ClustrixError, ConfigurationError
from clustrix.plugin.manager import installed_plugins, plugin_cli_commands


def cmd_config_show(args: argparse.Namespace) -> int:
    config = get_config()
    values = config.shown()  # environment_variables values as sizes: secrets are never printed
    data = {"config_file": str(config_path()), "profile": config.profile, "values": values}
    lines = [f"# config file: {config_path()}", f"# profile: {config.profile or '(none)'}"]
    lines += [f"{key} = {value!r}" for key, value in sorted(values.items())]
    emit(data, args.json, "\n".join(lines))
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    infos = installed_plugins()
    data = [
        {"name": i.name, "distribution": i.distribution, "version": i.version, "schedulers": list(i.schedulers)}
        for i in infos
    ]
    lines = [f"{'PLUGIN':<12} {'DISTRIBUTION':<22} {'VERSION':<10} SCHEDULERS"]
    lines += [
        f"{i.name:<12} {i.distribution or '-':<22} {i.version or '-':<10} {', '.join(i.schedulers) or '-'}"
        for i in infos
    ]
    emit(data, args.json, "\n".join(lines))
    return 0


class _Version(argparse.Action):
    """``--version``: clustrix-core's version and each installed plugin's, then exit (as ``pip --version``)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(version_text())
        parser.exit()


def version_text() -> str:
    """``clustrix-core 1.2.0 (Python 3.11.4)`` and one line per installed plugin distribution."""
    import importlib.metadata
    import platform

    try:
        core = importlib.metadata.version("clustrix-core")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        core = "unknown"
    lines = [f"clustrix-core {core} (Python {platform.python_version()})"]
    seen = {"clustrix-core"}
    for info in installed_plugins():
        if info.distribution and info.distribution not in seen:
            seen.add(info.distribution)
            lines.append(f"{info.distribution} {info.version or '?'}")
    return "\n".join(lines)


def build_parser(prog: str = "clustrix") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run Python functions on SLURM, PBS, SGE, Kubernetes, over SSH or locally: the configuration, "
        "the installed plugins, and the jobs in the local registry. Every command takes --json.",
        epilog=f"Run '{prog} COMMAND --help' for the options of a command.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log clustrix events to stderr")
    parser.add_argument(
        "--version", action=_Version, nargs=0, help="print the version of clustrix-core and of each plugin, and exit"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def add(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)
        return p

    config = sub.add_parser("config", help="show the resolved configuration", description="the configuration")
    config_sub = config.add_subparsers(dest="config_command", metavar="COMMAND", title="commands")
    config.set_defaults(func=None, help_of=config)
    show = config_sub.add_parser(
        "show",
        help="print every key with its value (secrets left out)",
        description="print every key with its value (secrets left out), the config file and the profile",
    )
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=cmd_config_show)

    add("plugins", cmd_plugins, "installed scheduler plugins and their versions")
    jobs = add("jobs", cmd_jobs, "jobs in the local registry, newest first")
    jobs.add_argument("--limit", type=int, default=50, help="show at most this many jobs (default: 50)")
    jobs.add_argument("--running", action="store_true", help="only jobs that have not finished")
    job_id = "the job's id, as clustrix jobs lists it"
    add("status", cmd_status, "ask the scheduler for a job's state").add_argument("job_id", help=job_id)
    logs = add("logs", cmd_logs, "print a job's stdout (or --stderr)")
    logs.add_argument("job_id", help=job_id)
    logs.add_argument("--stderr", action="store_true", help="print the job's stderr instead of its stdout")
    result = add("result", cmd_result, "fetch a finished job's result")
    result.add_argument("job_id", help=job_id)
    result.add_argument("--wait", action="store_true", help="block until the job finishes")
    result.add_argument(
        "--timeout", type=float, default=None, help="with --wait: give up after this many seconds (default: never)"
    )
    result.add_argument(
        "-o", "--output", help="write the pickled result to this new file (mode 0600) instead of printing it"
    )
    result.add_argument("--force", action="store_true", help="with -o: replace FILE if it exists (never via a link)")
    add("retry", cmd_retry, "run the failed and lost calls of a finished job again, in the same job").add_argument(
        "job_id", help=job_id
    )
    cancel = add("cancel", cmd_cancel, "cancel a job, pending or running")
    cancel.add_argument("job_id", help=job_id)
    cancel.add_argument(
        "--with-dependants", action="store_true", help="also cancel every job that takes this job's results"
    )
    add("doctor", cmd_doctor, "check the configuration, connection, remote python and work dir")
    code = add("code", cmd_code, "list the local modules a function would ship to the cluster (submits nothing)")
    code.add_argument("target", help="MODULE:FUNCTION, e.g. mylib:run (imported from the current folder)")
    submit = add("submit", cmd_submit, "show the job script and submit command of a call (--dry-run)")
    submit.add_argument(
        "--dry-run", action="store_true", help="show the exact job script and command(s); submit nothing"
    )
    submit.add_argument("--map", action="store_true", help="each ARG is an iterable: show fn.map(...)'s job array")
    submit.add_argument("--kw", dest="keyword", action="append", metavar="NAME=VALUE", help="a keyword argument")
    submit.add_argument("target", help="MODULE:FUNCTION, e.g. mylib:run (imported from the current folder)")
    submit.add_argument("args", nargs="*", metavar="ARG", help="arguments, read as Python literals where possible")
    taken = set(sub.choices)

    def add_for_plugin(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        if name in taken:
            raise ConfigurationError(f"a plugin adds the command {name!r}, which clustrix already has")
        taken.add(name)
        return add(name, func, help)

    plugin_cli_commands(add_for_plugin)
    parser.set_defaults(func=None, help_of=parser)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "clustrix") -> int:
    """Run the ``clustrix`` command; bare (or a bare group such as ``clustrix config``) prints its help."""
    try:
        args = build_parser(prog).parse_args(argv)
        if args.func is None:
            args.help_of.print_help()
            sys.stdout.flush()
            return 0
        return _run(args)
    except BrokenPipeError:
        return _closed_pipe()


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    try:
        code = int(args.func(args))
    except BrokenPipeError as exc:
        if _reader_gone():
            raise
        return _report(exc, args)  # another pipe broke (a connection): a real error
    except KeyboardInterrupt:
        print("clustrix: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the user; -v shows the traceback
        return _report(exc, args)
    sys.stdout.flush()  # a reader that went away (| head -1) is found here, not at exit
    return code


def _report(exc: Exception, args: argparse.Namespace) -> int:
    if args.verbose:
        traceback.print_exc()
    known = isinstance(exc, (ClustrixError, KeyError, ValueError, TimeoutError, OSError))
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    prefix = "" if known else f"{type(exc).__name__}: "
    hint = "" if args.verbose else " (run clustrix -v ... for the traceback)"
    print(f"clustrix: error: {prefix}{message}{'' if known else hint}", file=sys.stderr)
    return 1


def _reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (poll reports an error on its write end)."""
    poll = getattr(select, "poll", None)
    if poll is None:  # pragma: no cover - no poll(): take the broken pipe for stdout's
        return True
    try:
        poller = poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def _closed_pipe() -> int:
    """The reader of our output went away (``clustrix jobs | head -1``): stop quietly, as ``git`` and ``cat`` do.

    What is still buffered would fail again when Python flushes at exit, so stdout is pointed at
    /dev/null first. The exit code is the shell's for a command ended by SIGPIPE.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + 13
