"""The ``ssh`` entry point: the SSH transport for every scheduler, its config keys, and the plain ``ssh`` backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from clustrix.config.keys import ConfigKey
from clustrix.plugin.hookspecs import hookimpl
from clustrix_ssh.cli import LOGIN_KEYS, clustrix_cli_commands, clustrix_doctor_checks
from clustrix_ssh.keys import DECLARED_KEYS

#: the login commands and doctor lines (clustrix_ssh.cli) are hooks of this plugin too
__all__ = ["clustrix_cli_commands", "clustrix_doctor_checks"]

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig
    from clustrix_ssh.openssh import OpenSSHTransport
    from clustrix_ssh.transport import SSHTransport


def transport_from_config(config: ClusterConfig) -> SSHTransport | OpenSSHTransport:
    """The pooled transport for the connection settings of ``config``: OpenSSH or paramiko (``ssh_client``)."""
    from clustrix_ssh.client import choose_client, login_target

    if choose_client(config).client == "openssh":
        from clustrix_ssh import openssh

        return openssh.get_transport(login_target(config))
    from clustrix_ssh.transport import get_transport  # paramiko loads only when a connection is made

    return get_transport(
        config.cluster_host,
        port=config.get("cluster_port"),
        user=config.get("username"),
        key_file=config.get("key_file"),
        password=config.get("password"),
        known_hosts_file=config.get("known_hosts_file"),
        host_key_policy=config.get("host_key_policy") or "reject",
        forward_agent=bool(config.get("forward_agent")),
        ssh_config_file=config.get("ssh_config_file"),
    )


@hookimpl
def clustrix_config_keys() -> dict[str, ConfigKey]:
    return {**DECLARED_KEYS, **LOGIN_KEYS}


@hookimpl
def clustrix_make_transport(config: ClusterConfig) -> SSHTransport | OpenSSHTransport | None:
    if not config.get("cluster_host"):
        return None
    return transport_from_config(config)


@hookimpl
def clustrix_register_schedulers(register: Callable[[str, object], None]) -> None:
    from clustrix.batch.engine import BatchScheduler
    from clustrix_ssh.dialect import SSHDialect

    register("ssh", BatchScheduler(SSHDialect()))
