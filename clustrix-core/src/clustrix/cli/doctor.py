"""``clustrix doctor``: check the configuration end to end, from the plugin to the remote work dir and Python."""

from __future__ import annotations

import argparse
import shlex
import stat
from collections.abc import Sequence
from typing import Any

from clustrix import registry
from clustrix.cli.output import emit
from clustrix.config.settings import config_path, get_config
from clustrix.plugin.manager import plugin_doctor_checks, transport_for
from clustrix.remote.environment.interpreter import RUNNER_MODULES, remote_python
from clustrix.remote.scripts import CHECK_FUNCTIONS, SAFE_SYS_PATH, render_work_dir_check, run_checked


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
    from clustrix.plugin.types import ChecksBeforeConnecting, ProbesTarget

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
        impl = None if scheduler is None else scheduler.impl
        if isinstance(impl, ChecksBeforeConnecting):
            for name, func in impl.doctor_checks(config):
                check(name, func)

        for name, func in plugin_doctor_checks(config):
            check(name, func)

        def connect() -> Any:
            transport = transport_for(config)
            transport.expand("~")  # a remote transport connects (and checks the host key) here
            return transport

        transport = check("connection (host key checked)", connect, lambda t: f"{type(t).__name__} to {t.host}")
        if transport is not None and isinstance(impl, ProbesTarget):
            # the scheduler's own commands (command -v) and its site query, on the target
            target: ProbesTarget = impl
            check("scheduler commands", lambda: target.probe(config, transport))
        if transport is not None:
            needs: tuple[str, ...] = ()
            if config.get("python_executable"):
                # the job's own Python (no venv is built for it) must load what the scheduler's jobs import
                needs = impl.python_needs if impl is not None else RUNNER_MODULES
            probe = _python_probe(needs)
            path = transport.expand(config.remote_work_dir)

            def in_work_dir(*lines: str) -> str:
                """Run ``lines`` in the work dir, after it is created private or its whole path is checked."""
                script = "\n".join([CHECK_FUNCTIONS, *render_work_dir_check(path), *lines, ""])
                result = run_checked(
                    transport,
                    script,
                    timeout=60,
                    failure=lambda r: RuntimeError(f"exited {r.returncode}: {r.stderr.strip() or r.stdout.strip()}"),
                )
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
    emit({"ok": ok, "checks": checks}, args.json, "\n".join(lines))
    return 0 if ok else 1


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
