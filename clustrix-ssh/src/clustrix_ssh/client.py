"""Which SSH client a connection uses: the system OpenSSH or paramiko (``ssh_client``).

``"auto"`` (the default) takes OpenSSH when the host's ssh_config sets ``ControlMaster`` or
``ControlPath``, or a master connection for it is live (``clustrix login HOST``, or the
user's own); paramiko otherwise. The decision and its reason are cached per destination
(:func:`choose_client`), so ``clustrix doctor`` can say which one and why; a "paramiko"
decision of ``auto`` is looked at again after :data:`RECHECK_SECONDS`, so a login made
meanwhile in another terminal is picked up by a running process.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from typing import TYPE_CHECKING, Literal

import attrs

from clustrix_ssh import login
from clustrix_ssh.errors import ControlDirError

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig

Client = Literal["openssh", "paramiko"]
CHOICES = ("auto", "openssh", "paramiko")
RECHECK_SECONDS = 30.0


@attrs.frozen(kw_only=True)
class ClientChoice:
    """The client a destination uses, and why (one sentence, for ``clustrix doctor``)."""

    client: Client
    reason: str


def login_target(config: ClusterConfig) -> login.LoginTarget:
    """The destination of ``config`` as ``ssh`` is given it (clustrix's settings as ssh options)."""
    port = config.get("cluster_port")
    return login.LoginTarget(
        host=config.cluster_host,
        user=config.get("username"),
        port=int(port) if port else None,
        config_file=config.get("ssh_config_file"),
        key_file=config.get("key_file"),
        known_hosts_file=config.get("known_hosts_file"),
        host_key_policy=config.get("host_key_policy") or "reject",
        forward_agent=bool(config.get("forward_agent")),
    )


def decide(target: login.LoginTarget, setting: str) -> ClientChoice:
    """The decision for ``target`` under ``ssh_client=setting`` (runs ``ssh -G``, maybe ``ssh -O check``)."""
    if setting not in CHOICES:
        raise ValueError(f"ssh_client={setting!r} is not valid: use one of {', '.join(map(repr, CHOICES))}")
    if setting == "paramiko":
        return ClientChoice(client="paramiko", reason="ssh_client='paramiko' is configured")
    if setting == "openssh":
        return ClientChoice(client="openssh", reason="ssh_client='openssh' is configured")
    if shutil.which("ssh") is None:
        return ClientChoice(client="paramiko", reason="auto: there is no OpenSSH client `ssh` on PATH")
    values = login.resolve(target)
    where = target.config_file or "~/.ssh/config"
    control_master = values.get("controlmaster", "false").lower()
    user_path = login.user_control_path(target)
    if control_master not in ("false", "no") or user_path is not None:
        return ClientChoice(
            client="openssh",
            reason=f"auto: {where} sets ControlMaster={control_master} / ControlPath={user_path or 'none'} "
            f"for {target.host}",
        )
    try:
        ours = login.control_path(target, create=False)
    except ControlDirError as exc:  # paramiko still works; the reason says what to fix for OpenSSH
        return ClientChoice(client="paramiko", reason=f"auto: clustrix's login sockets cannot be used: {exc}")
    if os.path.exists(ours):  # a stat first: the fork of `ssh -O check` only when a socket is there
        status = login.master_status(target)
        if status.live:
            return ClientChoice(
                client="openssh", reason=f"auto: a `clustrix login` master for {target.host} is live (pid {status.pid})"
            )
    return ClientChoice(
        client="paramiko",
        reason=f"auto: no master connection for {target.host} is live (`clustrix login {target.host}` opens one) "
        f"and {where} sets no ControlMaster/ControlPath for it",
    )


_decisions: dict[tuple[login.LoginTarget, str], tuple[ClientChoice, float]] = {}
_lock = threading.Lock()


def choose_client(config: ClusterConfig) -> ClientChoice:
    """The client for the connection of ``config``, cached per destination (see the module docs)."""
    setting = str(config.get("ssh_client") or "auto")
    target = login_target(config)
    key = (target, setting)
    now = time.monotonic()
    with _lock:
        known = _decisions.get(key)
    if known is not None:
        choice, when = known
        if choice.client == "openssh" or setting != "auto" or now - when < RECHECK_SECONDS:
            return choice
    choice = decide(target, setting)
    with _lock:
        _decisions[key] = (choice, now)
    return choice


def forget() -> None:
    """Drop every cached decision (tests, and after ``clustrix login``/``logout``)."""
    with _lock:
        _decisions.clear()
