"""The configuration keys clustrix-ssh declares (``clustrix_config_keys``): how an SSH connection checks and forwards.

Core declares what any way into ``cluster_host`` needs (host, port, user, key file,
password); these belong to OpenSSH's way in, so they exist once this plugin is installed.
"""

from __future__ import annotations

from typing import Literal

from clustrix.config.keys import PATH, REMOTE, ConfigKey

_CONNECTION = "the SSH connection to `cluster_host` (ssh, and slurm/pbs/sge over SSH)"

DECLARED_KEYS: dict[str, ConfigKey] = {
    "known_hosts_file": ConfigKey(
        default=None,
        type=PATH | None,
        help="an extra known_hosts file for " + _CONNECTION,
        backends=REMOTE,
        connection=True,
        single_line=True,
    ),
    "host_key_policy": ConfigKey(
        default="reject",
        type=Literal["reject", "accept-new"],
        help='`"reject"` unknown SSH host keys, or `"accept-new"` as OpenSSH does',
        backends=REMOTE,
        connection=True,
    ),
    "forward_agent": ConfigKey(
        default=False, type=bool, help="SSH agent forwarding, off unless asked", backends=REMOTE, connection=True
    ),
    "ssh_client": ConfigKey(
        default="auto",
        type=Literal["auto", "openssh", "paramiko"],
        help='which SSH client: `"openssh"` (the system `ssh`, over a master connection: `clustrix login`), '
        '`"paramiko"`, or `"auto"`: OpenSSH when the host\'s ssh_config sets ControlMaster/ControlPath '
        "or a master for it is live, paramiko otherwise",
        backends=REMOTE,
        connection=True,
    ),
    "ssh_config_file": ConfigKey(
        default=None,
        type=PATH | None,
        help="an ssh_config file read instead of ~/.ssh/config (`ssh -F`), by both SSH clients",
        backends=REMOTE,
        connection=True,
        single_line=True,
    ),
}
