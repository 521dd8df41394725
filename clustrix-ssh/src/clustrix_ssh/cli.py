"""``clustrix login``, ``clustrix logout`` and the doctor's SSH lines, added by this plugin (core knows no transport).

``clustrix login HOST`` opens a master connection with the system ``ssh`` in the terminal, so
the user answers the site's prompts (a one-time code, a passphrase) once; every clustrix
process then rides it through the OpenSSH client until it ends (``ControlPersist``,
``login_persist``, 8 h by default). ``clustrix logout HOST`` ends it.
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from clustrix.config.keys import REMOTE, ConfigKey
from clustrix.plugin.hookspecs import hookimpl

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig
    from clustrix_ssh.login import LoginTarget, MasterStatus

LOGIN_KEYS: dict[str, ConfigKey] = {
    "login_persist": ConfigKey(
        default="8h",
        type=str,
        help="how long a `clustrix login` master connection stays open once idle (ssh's ControlPersist: "
        "`8h`, `90m`, `1h30m`)",
        backends=REMOTE,
        single_line=True,
    ),
}


def target_for(host: str | None, config: ClusterConfig) -> LoginTarget:
    """``HOST`` as ``ssh`` is given it; the configured ``cluster_host`` (or no HOST) brings its user, port and keys."""
    from clustrix_ssh import client, login

    if host is None or host == config.get("cluster_host"):
        if not config.get("cluster_host"):
            raise ValueError("name the host (clustrix login HOST), or configure cluster_host")
        return client.login_target(config)
    return login.LoginTarget(host=host, config_file=config.get("ssh_config_file"))


def when(timestamp: float | None) -> str:
    return "unknown" if timestamp is None else time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(timestamp))


def describe(status: MasterStatus, host: str) -> str:
    if not status.live:
        return f"no login to {host} is live"
    whose = "clustrix login" if status.source == "clustrix" else "your ssh_config's ControlPath"
    until = "" if status.until is None else f", until {when(status.until)} if left idle"
    return f"a login to {host} is live ({whose}, pid {status.pid}{until}; socket {status.control_path})"


def cmd_login(args: argparse.Namespace) -> int:
    from clustrix.cli.output import emit
    from clustrix.config.settings import get_config
    from clustrix_ssh import client, login

    config = get_config()
    target = target_for(args.host, config)
    persist = args.persist or config.get("login_persist") or login.DEFAULT_PERSIST
    seconds = login.parse_duration(persist)  # a typo fails here, before ssh asks for anything
    status = login.open_master(target, persist=seconds, interactive=True)
    client.forget()
    emit(
        {"host": target.host, "live": status.live, "pid": status.pid, "until": status.until},
        args.json,
        f"logged in to {target.host}: {describe(status, target.host)}.\n"
        f"Every clustrix process uses it (ControlPersist {persist}); `clustrix logout {target.host}` ends it.",
    )
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from clustrix.cli.output import emit
    from clustrix.config.settings import get_config
    from clustrix_ssh import client, login

    target = target_for(args.host, get_config())
    closed = login.close_master(target)
    client.forget()
    text = f"logged out of {target.host}" if closed else f"no clustrix login to {target.host} was live"
    emit({"host": target.host, "closed": closed}, args.json, text)
    return 0


@hookimpl
def clustrix_cli_commands(
    add: Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser],
) -> None:
    host_help = "the host as you give it to ssh (an alias of ~/.ssh/config, or a name); default: cluster_host"
    login_parser = add(
        "login",
        cmd_login,
        "log in to HOST once with your ssh (type the one-time code there); every clustrix process then uses it",
    )
    login_parser.add_argument("host", nargs="?", help=host_help)
    login_parser.add_argument(
        "--persist", help="how long the login lasts once idle (ssh's ControlPersist; default: login_persist, 8h)"
    )
    logout_parser = add("logout", cmd_logout, "end the login that `clustrix login HOST` opened")
    logout_parser.add_argument("host", nargs="?", help=host_help)


@hookimpl
def clustrix_doctor_checks(config: ClusterConfig) -> list[tuple[str, Callable[[], object]]]:
    """How the host is reached and why, and whether a login is live and until when."""
    if not config.get("cluster_host"):
        return []
    from clustrix_ssh import client, login
    from clustrix_ssh.errors import ControlDirError

    def which() -> str:
        choice = client.choose_client(config)
        return f"{choice.client} ({choice.reason})"

    def master() -> str:
        target = client.login_target(config)
        if shutil.which("ssh") is None:
            return "none (no OpenSSH client `ssh` on PATH)"
        try:
            status = login.master_status(target)
        except ControlDirError as exc:  # a login could not be used here: fatal only if OpenSSH is the client
            if client.choose_client(config).client == "openssh":
                raise
            return f"none: {exc} (paramiko reaches the host, which needs no login socket)"
        if status.live:
            return describe(status, target.host)
        return (
            f"{describe(status, target.host)} (a key alone needs none; a host that asks for a one-time code "
            f"does: `clustrix login {target.host}`)"
        )

    return [("ssh client", which), ("ssh login", master)]
