"""Host-key policies, ~/.ssh/config resolution and ProxyJump, against the real sshd."""

from __future__ import annotations

import subprocess
from pathlib import Path

import paramiko
import pytest

from clustrix.config.settings import resolve_config
from clustrix_ssh import ChangedHostKeyError, SSHConnectionError, UnknownHostKeyError, get_transport
from clustrix_ssh.target import resolve_target, split_destination
from tests.testbed.sshd import SSHServer


def test_ssh_config_alias_supplies_hostname_user_port_and_identity() -> None:
    config = paramiko.SSHConfig.from_text(
        "Host hpc\n  HostName login.example.org\n  User alice\n  Port 2200\n  IdentityFile ~/.ssh/hpc_key\n"
        "  ProxyJump bob@bastion:2022\n"
    )
    target = resolve_target("hpc", ssh_config=config)
    assert (target.hostname, target.user, target.port) == ("login.example.org", "alice", 2200)
    assert target.identity_files[0].endswith("/.ssh/hpc_key")
    assert target.proxy_jump == ("bob@bastion:2022",)
    assert target.known_hosts_name == "[login.example.org]:2200"


def test_explicit_settings_win_over_ssh_config_except_the_default_port() -> None:
    config = paramiko.SSHConfig.from_text("Host hpc\n  User alice\n  Port 2200\n  IdentityFile ~/k1\n")
    target = resolve_target("hpc", port=22, user="me", key_file="/keys/mine", ssh_config=config)
    assert (target.user, target.port) == ("me", 2200)
    assert target.identity_files[0] == "/keys/mine"
    assert resolve_target("hpc", port=2201, ssh_config=config).port == 2201


def test_forwardagent_in_ssh_config_does_not_forward_the_agent_only_forward_agent_true_does() -> None:
    config = paramiko.SSHConfig.from_text("Host *\n  ForwardAgent yes\n")
    assert resolve_target("hpc", ssh_config=config).forward_agent is False
    assert resolve_target("hpc", forward_agent=True, ssh_config=config).forward_agent is True


def test_destination_strings_split_like_openssh() -> None:
    assert split_destination("bob@bastion:2022") == ("bob", "bastion", 2022)
    assert split_destination("bastion") == (None, "bastion", None)
    assert split_destination("[::1]:2022") == (None, "::1", 2022)


@pytest.mark.testbed_ssh
def test_unknown_host_key_is_refused_with_instructions(sshd: SSHServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    transport = get_transport(
        sshd.host, port=sshd.port, user=sshd.user, key_file=sshd.key_file, known_hosts_file=str(empty)
    )
    with pytest.raises(UnknownHostKeyError) as caught:
        transport.run(["true"])
    message = str(caught.value)
    assert f"ssh-keyscan -p {sshd.port} {sshd.host} >> {empty}" in message
    assert 'host_key_policy="accept-new"' in message
    assert "SHA256:" in message


@pytest.mark.testbed_ssh
def test_accept_new_records_the_key_and_reuses_it(sshd: SSHServer, tmp_path: Path) -> None:
    known = tmp_path / "new_known_hosts"
    transport = get_transport(
        sshd.host,
        port=sshd.port,
        user=sshd.user,
        key_file=sshd.key_file,
        known_hosts_file=str(known),
        host_key_policy="accept-new",
    )
    assert transport.run(["true"]).ok
    kind, key = sshd.host_public_key.split()[:2]
    assert known.read_text() == f"[{sshd.host}]:{sshd.port} {kind} {key}\n"
    assert known.stat().st_mode & 0o077 == 0
    # a later process with the default policy now trusts the recorded key
    from clustrix_ssh import close_all

    close_all()
    again = get_transport(
        sshd.host, port=sshd.port, user=sshd.user, key_file=sshd.key_file, known_hosts_file=str(known)
    )
    assert again.run(["true"]).ok


@pytest.mark.testbed_ssh
def test_changed_host_key_is_refused_even_with_accept_new(sshd: SSHServer, tmp_path: Path) -> None:
    other = paramiko.Ed25519Key.from_private_key_file(sshd.key_file)  # any key that is not the host's
    known = tmp_path / "known_hosts"
    known.write_text(f"[{sshd.host}]:{sshd.port} {other.get_name()} {other.get_base64()}\n")
    transport = get_transport(
        sshd.host,
        port=sshd.port,
        user=sshd.user,
        key_file=sshd.key_file,
        known_hosts_file=str(known),
        host_key_policy="accept-new",
    )
    with pytest.raises(ChangedHostKeyError, match="CHANGED") as caught:
        transport.run(["true"])
    assert "ssh-keygen -R" in str(caught.value)
    assert known.read_text().count("\n") == 1  # nothing was added


@pytest.mark.testbed_ssh
def test_user_ssh_config_alias_is_honoured(sshd: SSHServer, isolated_home: Path) -> None:
    (isolated_home / ".ssh" / "config").write_text(
        f"Host testbed\n  HostName {sshd.host}\n  Port {sshd.port}\n"
        f"  User {sshd.user}\n  IdentityFile {sshd.key_file}\n"
    )
    (isolated_home / ".ssh" / "known_hosts").write_text(Path(sshd.known_hosts).read_text())
    transport = get_transport("testbed")
    assert transport.run(["id", "-un"]).stdout.strip() == sshd.user


@pytest.mark.testbed_ssh
def test_proxyjump_goes_through_the_jump_hosts_channel(sshd: SSHServer, isolated_home: Path) -> None:
    (isolated_home / ".ssh" / "config").write_text(
        f"Host jump\n  HostName {sshd.host}\n  Port {sshd.port}\n  User {sshd.user}\n  IdentityFile {sshd.key_file}\n"
        f"Host inner\n  HostName localhost\n  Port {sshd.port}\n  User {sshd.user}\n  IdentityFile {sshd.key_file}\n"
        "  ProxyJump jump\n"
    )
    kind, key = sshd.host_public_key.split()[:2]
    (isolated_home / ".ssh" / "known_hosts").write_text(
        f"[{sshd.host}]:{sshd.port} {kind} {key}\n[localhost]:{sshd.port} {kind} {key}\n"
    )
    transport = get_transport("inner")
    # the server sees the inner connection coming from its own tunnel: SSH_CONNECTION names ::1 or 127.0.0.1
    assert transport.run(["id", "-un"]).stdout.strip() == sshd.user
    assert len(transport.connection._jumps) == 1
    assert transport.connection._jumps[0].get_transport().is_active()


@pytest.mark.testbed_ssh
def test_a_reject_policy_never_reuses_a_connection_opened_with_accept_new(sshd: SSHServer, tmp_path: Path) -> None:
    trusting = get_transport(
        sshd.host,
        port=sshd.port,
        user=sshd.user,
        key_file=sshd.key_file,
        known_hosts_file=str(tmp_path / "recorded"),
        host_key_policy="accept-new",
    )
    assert trusting.run(["true"]).ok
    strict = get_transport(
        sshd.host, port=sshd.port, user=sshd.user, key_file=sshd.key_file, known_hosts_file=str(tmp_path / "empty")
    )
    assert strict is not trusting
    with pytest.raises(UnknownHostKeyError):
        strict.run(["true"])


def test_a_proxyjump_chain_longer_than_clustrix_follows_is_an_error_not_silently_cut() -> None:
    from clustrix_ssh import SSHConnectionError, SSHTransport
    from clustrix_ssh.connection import MAX_JUMPS

    hops = ",".join(f"hop{i}" for i in range(MAX_JUMPS + 1))
    config = paramiko.SSHConfig.from_text(f"Host far\n  ProxyJump {hops}\n")
    transport = SSHTransport(resolve_target("far", ssh_config=config))
    with pytest.raises(SSHConnectionError, match=f"has {MAX_JUMPS + 1} hops; clustrix follows at most {MAX_JUMPS}"):
        transport.run(["true"])


@pytest.mark.testbed_ssh
def test_two_configurations_with_different_keys_or_host_key_policies_never_share_a_connection(
    sshd: SSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler keeps no transports of its own: the one pool owns them, keyed by every access setting."""
    from clustrix.batch.engine import BatchScheduler
    from clustrix_slurm import SlurmDialect
    from clustrix_ssh import target as target_module

    transport_for = BatchScheduler(SlurmDialect()).transport

    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    parsed = []
    real_load = target_module.load_ssh_config
    monkeypatch.setattr(target_module, "load_ssh_config", lambda *a: parsed.append(1) or real_load(*a))

    def slurm(**extra: object) -> object:
        return resolve_config(overrides={**sshd.config(), "cluster_type": "slurm", **extra})

    good = transport_for(slurm())
    assert good.run(["true"]).ok
    assert transport_for(slurm()) is good  # the same settings: the same connection
    assert len(parsed) == 1  # ~/.ssh/config read once for this target, not on every hook

    other_key = transport_for(slurm(key_file=str(stranger)))
    assert other_key is not good
    with pytest.raises(SSHConnectionError):
        other_key.run(["true"])  # its own key is refused; it never rides on the open connection

    strict = transport_for(slurm(known_hosts_file=str(tmp_path / "empty_known_hosts"), host_key_policy="reject"))
    assert strict is not good
    with pytest.raises(UnknownHostKeyError):
        strict.run(["true"])
    assert good.run(["true"]).ok
