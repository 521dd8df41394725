"""The ``clustrix`` command: configuration, installed plugins, and jobs in the registry.

Every command takes ``--json`` for machine-readable output.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import importlib
import json
import logging
import os
import pickle
import select
import shlex
import stat
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from clustrix import registry
from clustrix.api.job import Job
from clustrix.config.settings import config_path, get_config
from clustrix.errors import ClustrixError
from clustrix.plugin.manager import installed_plugins, transport_for
from clustrix.remote.environment import RUNNER_MODULES, SAFE_SYS_PATH, remote_python
from clustrix.remote.runner import write_atomic
from clustrix.remote.scripts import CHECK_FUNCTIONS, render_work_dir_check, run_script, unsafe_from_stderr


def _print(data: Any, as_json: bool, text: str) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(text)


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def cmd_config_show(args: argparse.Namespace) -> int:
    config = get_config()
    values = config.shown()  # environment_variables values as sizes: secrets are never printed
    data = {"config_file": str(config_path()), "profile": config.profile, "values": values}
    lines = [f"# config file: {config_path()}", f"# profile: {config.profile or '(none)'}"]
    lines += [f"{key} = {value!r}" for key, value in sorted(values.items())]
    _print(data, args.json, "\n".join(lines))
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
    _print(data, args.json, "\n".join(lines))
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    records = registry.list_jobs(limit=args.limit, unfinished_only=args.running)
    data = [r.to_dict() for r in records]
    header = f"{'JOB ID':<30} {'SCHEDULER':<10} {'NATIVE':<12} {'STATE':<14} {'CALLS':>5}  {COUNTS_HEADER:<18}  "
    lines = [header + f"{'SUBMITTED':<19}  NAME"]
    lines += [
        f"{r.job_id:<30} {r.scheduler:<10} {r.handle.native_id or '-':<12} {r.state.value:<14} {r.size:>5}  "
        f"{_counts_column(r.counts):<18}  {_when(r.submitted_at):<19}  {r.name}"
        for r in records
    ]
    _print(data, args.json, "\n".join(lines))
    return 0


#: The calls of a job, as ``clustrix jobs`` shows them (at the last update of the registry).
COUNTS_HEADER = "DONE/FAIL/RUN/PEND"
COUNT_KEYS = ("done", "failed", "running", "pending")


def _counts_column(counts: dict[str, int] | None) -> str:
    return "/".join(str(counts.get(key, 0)) for key in COUNT_KEYS) if counts else "-"


def cmd_status(args: argparse.Namespace) -> int:
    job = Job.attach(args.job_id)
    status = job.status()
    counts = status.counts or (job.record.counts if status.state == job.record.state else None)
    data = {
        **job.record.to_dict(),
        "state": status.state.value,
        "reason": status.reason,
        "exit_code": status.exit_code,
        "counts": counts,
    }
    text = f"{job.job_id}: {status.state.value}" + (f" ({status.reason})" if status.reason else "")
    if counts:
        calls = ", ".join(f"{counts.get(key, 0)} {key}" for key in COUNT_KEYS)
        text += f"\n{job.handle.size} calls: {calls}"
    _print(data, args.json, text)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    job = Job.attach(args.job_id)
    stream = "stderr" if args.stderr else "stdout"
    text = job.logs(stream)
    _print({"job_id": job.job_id, "stream": stream, "text": text}, args.json, text.rstrip("\n"))
    return 0


def cmd_result(args: argparse.Namespace) -> int:
    job = Job.attach(args.job_id)
    if not args.wait:
        status = job.status()
        if not status.state.final:
            raise ClustrixError(f"job {job.job_id} is {status.state.value}; use --wait to block until it finishes")
    futures = job.futures(timeout=args.timeout)
    failed = [(index, f.exception()) for index, f in enumerate(futures) if f.exception() is not None]
    if failed:
        data = [_describe_failure(job.job_id, index, exc) for index, exc in failed if exc is not None]
        text = "\n".join(_failure_text(item, len(futures)) for item in data)
        if args.json:
            _print({"job_id": job.job_id, "failed": data}, True, "")
        else:
            print(text, file=sys.stderr)
        return 1
    value: Any = [f.result() for f in futures] if job.handle.size > 1 else futures[0].result()
    if args.output:
        _write_result(args.output, pickle.dumps(value), force=args.force)
        _print({"job_id": job.job_id, "output": args.output}, args.json, f"result pickled to {args.output}")
    else:
        _print({"job_id": job.job_id, "result": value}, args.json, repr(value))
    return 0


def _write_result(path: str, data: bytes, *, force: bool) -> None:
    """Store ``data`` at ``path``, mode 0600, never through a symbolic link.

    A new file only (``O_CREAT|O_EXCL|O_NOFOLLOW``: an existing file or link is refused), or
    with ``force`` a private file renamed over what is there (a link is replaced, not followed).
    """
    if force:
        if os.path.isdir(path) and not os.path.islink(path):
            raise ClustrixError(f"{path} is a directory: give a file name to write the result to")
        write_atomic(path, data)
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ClustrixError(
            f"{path} already exists (a file or a link): clustrix result -o writes a new file; choose another "
            "name, or add --force to replace it"
        ) from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _describe_failure(job_id: str, index: int, exc: BaseException) -> dict[str, Any]:
    """What the CLI reports of a call that failed: its exception type, message and remote traceback."""
    remote = getattr(exc, "remote_traceback", None)
    error_type = getattr(exc, "error_type", None) or _type_name(exc)
    return {"job_id": job_id, "call": index, "type": error_type, "message": str(exc), "remote_traceback": remote}


def _failure_text(item: dict[str, Any], calls: int) -> str:
    where = f"call {item['call']} of job {item['job_id']}" if calls > 1 else f"job {item['job_id']}"
    message = item["message"]
    if item["remote_traceback"] and item["remote_traceback"] in message:
        message = message.replace(item["remote_traceback"], "").rstrip().removesuffix("--- remote traceback ---")
    lines = [f"{where} failed: {item['type']}: {message.rstrip()}"]
    if item["remote_traceback"]:
        lines += ["remote traceback:", item["remote_traceback"].rstrip()]
    return "\n".join(lines)


def cmd_cancel(args: argparse.Namespace) -> int:
    job = Job.attach(args.job_id)
    ok = job.cancel()
    _print(
        {"job_id": job.job_id, "cancelled": ok}, args.json, f"{job.job_id}: {'cancelled' if ok else 'not cancelled'}"
    )
    return 0 if ok else 1


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check the configuration end to end: scheduler plugin, connection, scheduler commands, remote Python, work dir."""
    checks: list[dict[str, Any]] = []

    def check(name: str, func: Any, describe: Any = str) -> Any:
        try:
            value = func()
        except Exception as exc:  # noqa: BLE001 - every failure is a finding to report
            checks.append({"check": name, "ok": False, "detail": f"{type(exc).__name__}: {exc}"})
            return None
        if isinstance(value, tuple) and value[:1] == ("warn",):  # a finding that does not fail the doctor
            checks.append({"check": name, "ok": True, "warning": True, "detail": value[1]})
            return value
        checks.append({"check": name, "ok": True, "detail": describe(value)})
        return value

    from clustrix.plugin.manager import get_scheduler

    check("job registry", registry.check)
    config = check(
        "configuration",
        get_config,
        lambda c: f"cluster_type={c.cluster_type} profile={c.profile} (file {config_path()})",
    )
    if config is not None:
        scheduler = check(
            "scheduler plugin",
            lambda: get_scheduler(config.cluster_type),
            lambda s: f"{config.cluster_type} ({type(s.impl).__name__})",
        )
        plugin_checks = getattr(getattr(scheduler, "impl", None), "doctor_checks", None)
        for name, func in plugin_checks(config) if plugin_checks is not None else ():
            check(name, func)

        def connect() -> Any:
            transport = transport_for(config)
            transport.expand("~")  # a remote transport connects (and checks the host key) here
            return transport

        transport = check("connection (host key checked)", connect, lambda t: f"{type(t).__name__} to {t.host}")
        probe = getattr(getattr(scheduler, "impl", None), "probe", None)
        if transport is not None and callable(probe):
            # the scheduler's own commands (command -v) and its site query, on the target
            check("scheduler commands", lambda: probe(config, transport))
        if transport is not None:
            needs: tuple[str, ...] = ()
            if config.get("python_executable"):
                # the job's own Python (no venv is built for it) must load what the scheduler's jobs import
                needs = scheduler.impl.python_needs if scheduler is not None else RUNNER_MODULES
            probe = _python_probe(needs)
            path = transport.expand(config.remote_work_dir)

            def in_work_dir(*lines: str) -> str:
                """Run ``lines`` in the work dir, after it is created private or its whole path is checked."""
                script = "\n".join([CHECK_FUNCTIONS, *render_work_dir_check(path), *lines, ""])
                result = run_script(transport, script, timeout=60)
                unsafe = unsafe_from_stderr(result.stderr, transport.host)
                if unsafe is not None:
                    raise unsafe
                if not result.ok:
                    raise RuntimeError(f"exited {result.returncode}: {result.stderr.strip() or result.stdout.strip()}")
                return result.stdout

            def work_dir() -> str:
                try:
                    found: int | None = transport.stat(path).st_mode  # as found: nothing is chmod-ed
                except FileNotFoundError:
                    found = None
                if found is not None and stat.S_IFMT(found) and not stat.S_ISDIR(found):  # no type bits: not said
                    raise NotADirectoryError(
                        f"{path} is a file, not a directory: clustrix makes its job directories in it; move the file "
                        f"away (mv {path} {path}.old) or set remote_work_dir to a folder"
                    )
                in_work_dir()
                if found is None:
                    return f"{path} (created, mode 700)"
                mode = found & 0o777
                if mode & 0o077:
                    raise PermissionError(f"{path} has mode {mode:o}: other users can reach it; chmod 700 it")
                return f"{path} (mode {mode:o})"

            def remote_python_version() -> str:
                python = remote_python(transport, config.get("python_executable"))
                # in the checked work dir, the current directory off sys.path: nothing planted is imported
                return in_work_dir(shlex.join([python, "-c", f"{SAFE_SYS_PATH}\n{probe}"])).strip()

            check("remote work dir", work_dir)
            check("remote python", remote_python_version)
    ok = all(c["ok"] for c in checks)
    lines = [
        f"[{'WARN' if c.get('warning') else 'ok' if c['ok'] else 'FAIL'}] {c['check']}: {c['detail']}" for c in checks
    ]
    _print({"ok": ok, "checks": checks}, args.json, "\n".join(lines))
    return 0 if ok else 1


def cmd_code(args: argparse.Namespace) -> int:
    """What of the user's own code a function would take to the cluster (nothing is submitted)."""
    from clustrix.remote import localcode, runner

    function = runner.unwrap(_import_target(args.target, "code"))
    _, referenced = localcode.dumps_recording(function)
    plan = localcode.plan_code(referenced, get_config(), needs=())
    units = localcode.describe(plan)
    lines = [f"{'UNIT':<40} {'SIZE':>10}  SOURCE"]
    lines += [f"{u['label']:<40} {u['size']:>10}  {u['source']}" for u in units] or ["(nothing: no local code)"]
    lines.append(f"imported remotely before submit: {', '.join(plan.modules) or '-'}")
    _print({"units": units, "modules": list(plan.modules)}, args.json, "\n".join(lines))
    return 0


def _import_target(target: str, command: str) -> Any:
    """The object ``MODULE:FUNCTION`` names, imported as ``python -c "import MODULE"`` run here would."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{target!r} is not valid: use MODULE:FUNCTION, e.g. clustrix {command} mylib:run")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no {attribute!r} (from {target!r})") from None


def _cli_value(text: str) -> Any:
    """A command-line argument as a Python literal (``3``, ``'a'``, ``[1, 2]``), else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def cmd_submit(args: argparse.Namespace) -> int:
    """``clustrix submit --dry-run MODULE:FUNCTION [ARG...]``: the job script and command, nothing submitted."""
    from clustrix.api.decorator import ClusterFunction, cluster

    if not args.dry_run:
        raise ValueError(
            "clustrix submit only shows what would be submitted: add --dry-run "
            "(submit from Python with fn(...), fn.submit(...) or fn.map(...))"
        )
    target = _import_target(args.target, "submit --dry-run")
    if not callable(target):
        raise ValueError(f"{args.target!r} is not a function")
    function = target if isinstance(target, ClusterFunction) else cluster(target)
    values = [_cli_value(text) for text in args.args]
    keywords: dict[str, Any] = {}
    for item in args.keyword or []:
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier():
            raise ValueError(f"--kw {item!r} is not valid: use NAME=VALUE, e.g. --kw n_steps=500")
        keywords[name] = _cli_value(text)
    if args.map:
        if keywords:
            raise ValueError("--map takes positional iterables only (like fn.map); leave out --kw")
        shown = function.job_script.map(*values)
    else:
        shown = function.job_script(*values, **keywords)
    _print(shown.to_dict(), args.json, str(shown).rstrip("\n"))
    return 0


def _python_probe(modules: Sequence[str]) -> str:
    """Python code that prints its version and path, or exits naming every module of ``modules`` it cannot import."""
    return (
        "import sys\nmissing = []\n"
        f"for name in {list(modules)!r}:\n"
        "    try:\n        __import__(name)\n"
        "    except ImportError as exc:\n        missing.append(f'{type(exc).__name__}: {exc}')\n"
        "if missing:\n    sys.exit('; '.join(missing))\n"
        "print(sys.version.split()[0], sys.executable)"
    )


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
    add("cancel", cmd_cancel, "cancel a job, pending or running").add_argument("job_id", help=job_id)
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


if __name__ == "__main__":
    sys.exit(main())
