"""The OpenSSH transport against the real sshd: one login carries every command, nothing secret in argv.

ssh reads ``~/.ssh`` from the passwd home, not ``$HOME``: every test gives it its own config
file (``ssh_config_file``, that is ``ssh -F``) with the testbed's key and known_hosts, and its
own control directory (``CLUSTRIX_CONTROL_DIR``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from clustrix import cluster
from clustrix.config.settings import resolve_config
from clustrix.plugin.manager import transport_for
from clustrix_ssh import client, login, openssh
from clustrix_ssh.errors import ChangedHostKeyError, HostKeyError, LoginRequiredError, SSHConnectionError
from clustrix_ssh.openssh import OpenSSHTransport
from tests.ssh.helpers import REPLICATE
from tests.testbed.sshd import SSHServer

pytestmark = pytest.mark.testbed_ssh
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def write_ssh_config(path: Path, server: SSHServer, *extra: str, known_hosts: str | None = None) -> Path:
    """A ``-F`` file: the alias ``tb`` for the testbed, its key, its known_hosts only."""
    lines = [
        "Host tb",
        "  HostName 127.0.0.1",
        f"  Port {server.port}",
        f"  User {server.user}",
        f"  IdentityFile {server.key_file}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {known_hosts or server.known_hosts}",
        "  GlobalKnownHostsFile /dev/null",
        *extra,
        "",
    ]
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
def control(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short private control directory for this test, and no master left behind."""
    base = Path(tmp_path_factory.mktemp("cm", numbered=True))
    directory = base / "ssh"
    monkeypatch.setenv("CLUSTRIX_CONTROL_DIR", str(directory))
    yield directory
    openssh.close_all()
    client.forget()


@pytest.fixture
def tb(sshd: SSHServer, tmp_path: Path, control: Path) -> login.LoginTarget:
    return login.LoginTarget(host="tb", config_file=str(write_ssh_config(tmp_path / "ssh_config", sshd)))


def accepted_logins(server: SSHServer) -> int:
    return (Path(server.directory) / "sshd.log").read_text().count("Accepted publickey")


def test_auto_takes_paramiko_without_a_login_or_control_lines(sshd: SSHServer, tb: login.LoginTarget) -> None:
    choice = client.decide(tb, "auto")
    assert choice.client == "paramiko"
    assert "no master connection for tb is live" in choice.reason and "clustrix login tb" in choice.reason


def test_auto_takes_openssh_when_the_ssh_config_sets_a_control_path(
    sshd: SSHServer, tmp_path: Path, control: Path
) -> None:
    config = write_ssh_config(
        tmp_path / "cfg", sshd, f"  ControlPath {tmp_path}/cm-%C", "  ControlMaster auto", "  ControlPersist 60"
    )
    choice = client.decide(login.LoginTarget(host="tb", config_file=str(config)), "auto")
    assert choice.client == "openssh"
    assert "ControlMaster=auto" in choice.reason and f"ControlPath={tmp_path}/cm-" in choice.reason


def test_auto_takes_openssh_while_a_login_is_live_and_paramiko_after_logout(
    sshd: SSHServer, tb: login.LoginTarget
) -> None:
    status = login.open_master(tb, persist="5m", interactive=False)
    assert status.live and status.source == "clustrix" and status.pid
    assert status.until is not None and 290 < status.until - time.time() <= 300
    choice = client.decide(tb, "auto")
    assert choice.client == "openssh" and f"pid {status.pid}" in choice.reason
    assert login.close_master(tb)
    assert not login.master_status(tb).live
    assert client.decide(tb, "auto").client == "paramiko"


def test_a_configured_client_wins_over_auto(sshd: SSHServer, tmp_path: Path, control: Path) -> None:
    config = write_ssh_config(tmp_path / "cfg", sshd, f"  ControlPath {tmp_path}/cm-%C", "  ControlMaster auto")
    target = login.LoginTarget(host="tb", config_file=str(config))
    assert client.decide(target, "paramiko").client == "paramiko"
    assert client.decide(target, "openssh").reason == "ssh_client='openssh' is configured"
    with pytest.raises(ValueError, match="ssh_client='putty' is not valid"):
        client.decide(target, "putty")


def test_the_decision_is_cached_per_destination_and_picks_the_transport(sshd: SSHServer, tb: login.LoginTarget) -> None:
    settings = {"cluster_type": "ssh", "cluster_host": "tb", "ssh_config_file": tb.config_file}
    config = resolve_config(overrides=settings)
    first = client.choose_client(config)
    assert first.client == "paramiko"
    assert type(transport_for(config)).__name__ == "SSHTransport"
    login.open_master(tb, interactive=False)
    assert client.choose_client(config) is first  # cached: the next look is after RECHECK_SECONDS
    client.forget()
    assert client.choose_client(config).client == "openssh"
    transport = transport_for(config)
    assert isinstance(transport, OpenSSHTransport)
    assert transport_for(config) is transport  # pooled like the paramiko transports
    assert transport.run(["id", "-un"]).stdout.strip() == sshd.user


def test_every_command_and_a_warm_call_ride_one_login(sshd: SSHServer, tb: login.LoginTarget) -> None:
    settings = {
        "cluster_type": "ssh",
        "cluster_host": "tb",
        "ssh_config_file": tb.config_file,
        "ssh_client": "openssh",
        "replicate_distributions": REPLICATE,
    }

    @cluster(**settings)
    def add(a: int, b: int) -> int:
        return a + b

    before = accepted_logins(sshd)
    assert add(1, 2) == 3  # the transport opens its own master: the host asks for nothing but the key
    transport = transport_for(resolve_config(overrides=settings))
    assert isinstance(transport, OpenSSHTransport)
    counted = transport.operations()["commands"]
    assert add(20, 22) == 42
    assert transport.operations()["commands"] - counted == 2  # submit, then one watch: as over paramiko
    assert [add(i, i) for i in range(5)] == [0, 2, 4, 6, 8]
    assert accepted_logins(sshd) - before == 1


def test_secrets_travel_on_stdin_never_in_the_ssh_argv(
    sshd: SSHServer, tb: login.LoginTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    real = subprocess.Popen

    def recording(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        seen.append(list(argv))
        return real(argv, **kwargs)

    monkeypatch.setattr(openssh.subprocess, "Popen", recording)
    transport = openssh.get_transport(tb)
    secret = "s3cr3t-value-x"
    result = transport.run(["sh", "-c", 'printf %s "$TOKEN"'], env={"TOKEN": secret})
    assert result.stdout == secret
    assert seen and not any(secret in word for argv in seen for word in argv)


def test_large_payloads_and_results_stream_through_stdin_and_stdout(sshd: SSHServer, tb: login.LoginTarget) -> None:
    transport = openssh.get_transport(tb)
    data = os.urandom(64 * 1024 * 1024)
    code, out, err = transport.run_bytes("cat", input=data)
    assert (code, err) == (0, b"")
    assert out == data


def test_paths_and_exit_codes_as_the_protocol_says(sshd: SSHServer, tb: login.LoginTarget) -> None:
    transport = openssh.get_transport(tb)
    assert transport.expand("~") == sshd.home and transport.expand("~/a/b") == f"{sshd.home}/a/b"
    info = transport.stat("~")
    assert info.st_uid == os.stat(sshd.home).st_uid and info.st_mode & 0o040000
    with pytest.raises(FileNotFoundError):
        transport.stat("~/no-such-file")
    assert transport.run_bytes("exit 255")[0] == 255  # a remote 255 is the command's, not a lost link
    assert transport.run(["sh", "-c", "echo out; echo err >&2; exit 3"]).returncode == 3


def test_no_login_fails_within_seconds_naming_the_host_and_the_fix(
    sshd: SSHServer, tmp_path: Path, control: Path
) -> None:
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    config = write_ssh_config(tmp_path / "cfg", sshd)
    config.write_text(config.read_text().replace(sshd.key_file, str(stranger)))
    transport = openssh.get_transport(login.LoginTarget(host="tb", config_file=str(config)))
    started = time.monotonic()
    with pytest.raises(LoginRequiredError) as caught:
        transport.run(["true"])
    assert time.monotonic() - started < 10
    assert isinstance(caught.value, ConnectionError)  # what the poller keeps waiting through
    assert "no usable login for tb" in str(caught.value) and "clustrix login tb" in str(caught.value)


def test_host_keys_are_checked(sshd: SSHServer, tmp_path: Path, control: Path) -> None:
    unknown = tmp_path / "empty_known_hosts"
    unknown.write_text("")
    config = write_ssh_config(tmp_path / "cfg", sshd, known_hosts=str(unknown))
    transport = openssh.get_transport(login.LoginTarget(host="tb", config_file=str(config)))
    with pytest.raises(HostKeyError, match="could not verify the host key of tb"):
        transport.run(["true"])
    assert unknown.read_text() == ""  # nothing was accepted on the way


def test_the_link_going_away_is_a_connection_error(sshd: SSHServer, tb: login.LoginTarget) -> None:
    transport = openssh.get_transport(tb)
    assert transport.run(["true"]).ok
    sshd.stop()
    try:
        with pytest.raises(SSHConnectionError, match="tb"):
            transport.run(["true"])
    finally:
        sshd.start()
    assert transport.run(["echo", "back"]).stdout == "back\n"  # a new master, no new process


def test_proxyjump_aliases_and_identity_come_from_the_ssh_config(
    sshd: SSHServer, tmp_path: Path, control: Path
) -> None:
    config = write_ssh_config(tmp_path / "cfg", sshd)
    config.write_text(config.read_text() + config.read_text().replace("Host tb", "Host tb-jumped") + "  ProxyJump tb\n")
    transport = openssh.get_transport(login.LoginTarget(host="tb-jumped", config_file=str(config)))
    before = accepted_logins(sshd)
    assert transport.run(["id", "-un"]).stdout.strip() == sshd.user
    assert accepted_logins(sshd) - before == 2  # the jump, then the host through it


def doubled_slowly(x: int) -> int:
    time.sleep(4)
    return 2 * x


def test_a_map_waits_through_a_lost_login_and_completes_after_a_new_one(sshd: SSHServer, tb: login.LoginTarget) -> None:
    settings = {
        "cluster_type": "ssh",
        "cluster_host": "tb",
        "ssh_config_file": tb.config_file,
        "ssh_client": "openssh",
        "replicate_distributions": REPLICATE,
        "job_poll_interval": 0.2,
    }
    assert login.open_master(tb, interactive=False).live  # the user's login
    futures = cluster(**settings)(doubled_slowly).submit_map(range(4))
    authorized = Path(sshd.directory) / "authorized_keys" / sshd.user
    kept = authorized.read_text()
    authorized.write_text("")  # from now on a login needs what the process does not have (a code, say)
    try:
        status = login.master_status(tb)
        assert status.pid is not None
        os.kill(status.pid, 15)  # the master goes away mid-map (expired, laptop asleep)
        time.sleep(6)  # the calls end meanwhile; every poll round fails with LoginRequiredError
        with pytest.raises(LoginRequiredError):
            transport_for(resolve_config(overrides=settings)).run(["true"])
        assert not any(f.done() for f in futures)  # nothing failed, nothing lost: the futures wait
    finally:
        authorized.write_text(kept)
    login.open_master(tb, interactive=False)  # a new login
    assert [f.result(timeout=60) for f in futures] == [0, 2, 4, 6]


def test_a_changed_host_key_is_refused(sshd: SSHServer, tmp_path: Path, control: Path) -> None:
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    key_type, key = Path(f"{other}.pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {key_type} {key}\n")
    config = write_ssh_config(tmp_path / "cfg", sshd, known_hosts=str(wrong))
    transport = openssh.get_transport(login.LoginTarget(host="tb", config_file=str(config)))
    with pytest.raises(ChangedHostKeyError, match="has CHANGED"):
        transport.run(["true"])
