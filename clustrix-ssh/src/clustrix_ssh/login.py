"""Log in once with the system OpenSSH: a master connection that every clustrix process rides.

A site that asks for a one-time code at each login (or a Kerberos ticket, a short-lived
certificate, a FIDO key) is reached through the user's own ``ssh``: ``clustrix login HOST``
opens a master connection in the terminal (the code is typed once), and the OpenSSH
transport (:mod:`clustrix_ssh.openssh`) sends every command over it. The master's socket
lives in :func:`control_dir`, a directory private to the user, checked before every use:
whoever can connect to the socket can run commands as the user on the cluster.

Everything here runs ``ssh`` with an argv (no shell) and never puts a secret in it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import attrs
import platformdirs

from clustrix_ssh.errors import ControlDirError, SSHConnectionError

#: ``ControlPersist`` of ``clustrix login`` unless told otherwise.
DEFAULT_PERSIST = "8h"
#: How long a local ``ssh -G`` / ``ssh -O`` may take (no network is involved).
LOCAL_TIMEOUT = 10.0
#: A unix socket path is at most 107 bytes, and ssh adds a 17-character suffix while it binds.
MAX_SOCKET_PATH = 107 - 17
_DURATION = re.compile(r"(\d+)([smhdw]?)", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@attrs.frozen(kw_only=True)
class LoginTarget:
    """A destination as ``ssh`` is given it: the name the user wrote, with clustrix's overrides.

    ``config_file`` is ``ssh -F`` (tests, or a user who keeps a separate file); None means
    the user's own ``~/.ssh/config``, read by ``ssh`` itself from the passwd home.
    """

    host: str
    user: str | None = None
    port: int | None = None
    config_file: str | None = None
    #: clustrix's ``key_file``, offered first (``-i``), as the paramiko transport does
    key_file: str | None = None
    #: clustrix's ``known_hosts_file``: read besides the ssh_config's ``UserKnownHostsFile``
    known_hosts_file: str | None = None
    #: ``"reject"`` (``StrictHostKeyChecking=yes``) or ``"accept-new"``; never "no"
    host_key_policy: str = "reject"
    forward_agent: bool = False

    def ssh_options(self) -> list[str]:
        """The options that pick this destination: ``-F``, ``-l``, ``-p`` (no host)."""
        options: list[str] = []
        if self.config_file:
            options += ["-F", os.path.expanduser(self.config_file)]
        if self.user:
            options += ["-l", self.user]
        if self.port and self.port != 22:
            options += ["-p", str(self.port)]
        return options


def connection_options(target: LoginTarget) -> list[str]:
    """The options of a connection that authenticates: keys, host-key checking, agent forwarding.

    Host keys are always checked: ``StrictHostKeyChecking`` is ``yes`` or ``accept-new``, the
    ssh_config's known_hosts files stay in use and clustrix's ``known_hosts_file`` is added.
    """
    if target.host_key_policy not in ("reject", "accept-new"):
        raise ValueError(f"host_key_policy={target.host_key_policy!r} is not valid: use 'reject' or 'accept-new'")
    options = ["-o", "StrictHostKeyChecking=" + ("yes" if target.host_key_policy == "reject" else "accept-new")]
    if target.key_file:
        options += ["-i", os.path.expanduser(target.key_file)]
    if target.known_hosts_file:
        files = resolve(target).get("userknownhostsfile", "~/.ssh/known_hosts ~/.ssh/known_hosts2").split()
        files.append(os.path.expanduser(target.known_hosts_file))
        options += ["-o", "UserKnownHostsFile=" + " ".join(f'"{f}"' for f in files)]
    # as with paramiko, only clustrix's own forward_agent=True hands the agent over, never a "Host *" default
    options += ["-o", "ForwardAgent=" + ("yes" if target.forward_agent else "no")]
    return options


def as_target(target: LoginTarget | str) -> LoginTarget:
    return LoginTarget(host=target) if isinstance(target, str) else target


def ssh_binary() -> str:
    """The system ``ssh`` (a clear error when there is none)."""
    found = shutil.which("ssh")
    if found is None:
        raise SSHConnectionError("the OpenSSH client `ssh` is not on PATH; install it, or use ssh_client='paramiko'")
    return found


def parse_duration(text: str | int) -> int:
    """Seconds in an ssh_config time (``8h``, ``90m``, ``1h30m``, ``600``)."""
    if isinstance(text, int):
        return text
    value = text.strip()
    parts = _DURATION.findall(value)
    if not value or "".join(n + u for n, u in parts).lower() != value.lower():
        raise ValueError(f"{text!r} is not an ssh time such as '8h', '90m' or '1h30m'")
    return sum(int(number) * _UNITS[unit.lower()] for number, unit in parts)


# -- the private directory of the sockets ---------------------------------------------------


def _base_dir() -> Path:
    override = os.environ.get("CLUSTRIX_CONTROL_DIR")
    if override:
        return Path(override).expanduser()
    # the runtime dir (/run/user/UID) exists only under a login session; platformdirs would
    # then fall back to /tmp/runtime-UID, a name another user can take first: the state dir instead
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(platformdirs.user_runtime_dir("clustrix")) / "ssh"
    return Path(platformdirs.user_state_dir("clustrix")) / "ssh"


def check_private_dir(path: Path) -> None:
    """Refuse ``path`` unless it is a real directory owned by this user that nobody else can enter."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise ControlDirError(f"the SSH control directory {path} does not exist") from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise ControlDirError(f"the SSH control directory {path} is not a directory (a symbolic link?); remove it")
    if info.st_uid != os.geteuid():
        raise ControlDirError(
            f"the SSH control directory {path} belongs to uid {info.st_uid}, not to you (uid {os.geteuid()}); "
            "refusing to put a login socket there. Remove it, or set CLUSTRIX_CONTROL_DIR to a private directory."
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise ControlDirError(
            f"the SSH control directory {path} has mode {stat.S_IMODE(info.st_mode):04o}: others could reach "
            f"the login socket. Run `chmod 700 {path}`."
        )


def control_dir(*, create: bool = True) -> Path:
    """The directory of clustrix's master sockets: created 0700 if missing, checked on every call.

    With ``create=False`` a missing directory is returned unchecked (no socket can be in it).
    """
    path = _base_dir()
    if not create and not os.path.lexists(path):
        return path
    if not os.path.lexists(path):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass  # another process made it: checked below like any other
    check_private_dir(path)
    return path


# -- resolving a destination as ssh does --------------------------------------------------------


def _config_stamp(target: LoginTarget) -> tuple[str, int | None]:
    path = target.config_file or os.path.join(pwd.getpwuid(os.getuid()).pw_dir, ".ssh", "config")
    try:
        return path, os.stat(os.path.expanduser(path)).st_mtime_ns
    except OSError:
        return path, None


_resolved_cache: dict[tuple[LoginTarget, tuple[str, int | None]], dict[str, str]] = {}
_cache_lock = threading.Lock()


def resolve(target: LoginTarget | str) -> dict[str, str]:
    """``ssh -G``: the whole ssh_config for the destination (Host, Match, includes), keys lowercased.

    A key given several times (``identityfile``) keeps its lines joined by newlines. Cached
    per destination until the config file changes.
    """
    target = as_target(target)
    key = (target, _config_stamp(target))
    with _cache_lock:
        known = _resolved_cache.get(key)
    if known is not None:
        return known
    proc = subprocess.run(
        [ssh_binary(), "-G", *target.ssh_options(), target.host],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=LOCAL_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise SSHConnectionError(
            f"ssh cannot read its configuration for {target.host}: {proc.stderr.decode(errors='replace').strip()}"
        )
    values: dict[str, str] = {}
    for line in proc.stdout.decode(errors="replace").splitlines():
        name, _, value = line.partition(" ")
        values[name] = f"{values[name]}\n{value}" if name in values else value
    with _cache_lock:
        _resolved_cache[key] = values
    return values


def user_control_path(target: LoginTarget | str) -> str | None:
    """The ``ControlPath`` the user's ssh_config sets for the destination (expanded), or None."""
    value = resolve(target).get("controlpath", "none")
    return None if value.lower() == "none" else value


def control_path(target: LoginTarget | str, *, create: bool = True) -> str:
    """clustrix's socket for the destination: one per resolved user, host, port and jump hosts.

    A hash keeps it short enough for a unix socket; an alias and the name it stands for share it.
    ``create=False`` does not make the directory (to look whether a master is there).
    """
    values = resolve(target)
    identity = "\0".join(values.get(k, "") for k in ("user", "hostname", "port", "proxyjump", "proxycommand"))
    name = "cm-" + hashlib.sha256(identity.encode()).hexdigest()[:20]
    path = str(control_dir(create=create) / name)
    if len(path.encode()) > MAX_SOCKET_PATH:
        raise ControlDirError(
            f"the SSH control socket path {path} is too long for a unix socket; "
            "set CLUSTRIX_CONTROL_DIR to a shorter private directory"
        )
    return path


# -- the master connection ------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class MasterStatus:
    """Whether a master connection to a destination is live, and whose.

    ``source`` is ``"clustrix"`` (opened by ``clustrix login``, socket in :func:`control_dir`),
    ``"ssh_config"`` (the user's own ControlPath) or None when none is live. ``until`` is when a
    ``clustrix login`` master ends if left idle from the moment it was opened (``ControlPersist``
    counts idle time, so a master in use lives longer); None when unknown.
    """

    live: bool
    control_path: str | None
    source: str | None
    pid: int | None = None
    opened_at: float | None = None
    until: float | None = None
    detail: str = ""


def _check(target: LoginTarget, path: str | None) -> tuple[bool, int | None, str]:
    options = [] if path is None else ["-o", f"ControlPath={path}"]
    proc = subprocess.run(
        [ssh_binary(), *target.ssh_options(), *options, "-O", "check", target.host],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=LOCAL_TIMEOUT,
        check=False,
    )
    text = proc.stderr.decode(errors="replace").strip()
    match = re.search(r"pid=(\d+)", text)
    return proc.returncode == 0, int(match.group(1)) if match else None, text


def _stamp_file(path: str) -> Path:
    return Path(path + ".json")


def master_status(target: LoginTarget | str) -> MasterStatus:
    """Is a master live for the destination: clustrix's own socket first, then the user's ControlPath."""
    target = as_target(target)
    ours = control_path(target)
    live, pid, text = _check(target, ours)
    if live:
        opened = until = None
        try:
            record = json.loads(_stamp_file(ours).read_text())
            if record.get("pid") in (None, pid):
                opened = float(record["opened_at"])
                until = opened + float(record["persist_seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return MasterStatus(live=True, control_path=ours, source="clustrix", pid=pid, opened_at=opened, until=until)
    theirs = user_control_path(target)
    if theirs is not None and theirs != ours:
        live, pid, text = _check(target, None)
        if live:
            return MasterStatus(live=True, control_path=theirs, source="ssh_config", pid=pid, detail=text)
    return MasterStatus(live=False, control_path=None, source=None, detail=text)


def master_argv(target: LoginTarget | str, *, persist: str | int = DEFAULT_PERSIST, batch: bool = False) -> list[str]:
    """The ``ssh`` argv that opens clustrix's master for the destination and goes to the background."""
    target = as_target(target)
    seconds = parse_duration(persist)
    return [
        ssh_binary(),
        *target.ssh_options(),
        *connection_options(target),
        "-o",
        "ServerAliveInterval=15",
        "-M",
        "-N",
        "-f",
        "-o",
        "ControlMaster=yes",
        "-o",
        f"ControlPath={control_path(target)}",
        "-o",
        f"ControlPersist={seconds}s",
        *(["-o", "BatchMode=yes"] if batch else []),
        target.host,
    ]


def _ignore_hangup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def open_master(
    target: LoginTarget | str,
    *,
    persist: str | int = DEFAULT_PERSIST,
    interactive: bool = True,
    timeout: float | None = None,
) -> MasterStatus:
    """Open a master connection (``ssh -M -N -f``) and return its status once it is live.

    ``interactive=True`` runs ``ssh`` on this process's terminal, so the user answers its
    prompts (passphrase, one-time code) once; ``interactive=False`` is ``BatchMode=yes``
    with output captured, for destinations that need no typing. An already live master of
    clustrix's is kept and returned.
    """
    target = as_target(target)
    current = master_status(target)
    if current.live and current.source == "clustrix":
        return current
    argv = master_argv(target, persist=persist, batch=not interactive)
    if interactive:
        # ssh -f puts the master in the background, but a ProxyJump hop's `ssh -W` stays in the terminal's
        # session: closing the terminal (SIGHUP) would kill it and the master with it. ssh leaves an
        # ignored SIGHUP ignored, so every process of the login is started with it ignored.
        proc = subprocess.run(argv, timeout=timeout, check=False, preexec_fn=_ignore_hangup)
        message = ""
    else:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout or 60.0,
            check=False,
            start_new_session=True,  # no terminal: nothing to prompt on, no Ctrl-C of the terminal
        )
        message = proc.stderr.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise SSHConnectionError(
            f"could not log in to {target.host} (ssh exited with {proc.returncode})"
            + (f": {message}" if message else "")
        )
    status = master_status(target)
    if not status.live or status.control_path is None:
        raise SSHConnectionError(f"ssh logged in to {target.host} but no master connection is live afterwards")
    record = {"pid": status.pid, "opened_at": time.time(), "persist_seconds": parse_duration(persist)}
    fd = os.open(_stamp_file(status.control_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(record, fh)
    return master_status(target)


def close_master(target: LoginTarget | str) -> bool:
    """End clustrix's master for the destination (``ssh -O exit``); False when none was live."""
    target = as_target(target)
    path = control_path(target)
    live, _, _ = _check(target, path)
    _stamp_file(path).unlink(missing_ok=True)
    if not live:
        return False
    subprocess.run(
        [ssh_binary(), *target.ssh_options(), "-o", f"ControlPath={path}", "-O", "exit", target.host],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=LOCAL_TIMEOUT,
        check=False,
    )
    return True
