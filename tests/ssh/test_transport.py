"""SSHTransport against the real sshd: commands, files, private modes, the pool."""

from __future__ import annotations

import stat
import subprocess
import threading
from pathlib import Path

import pytest

from clustrix.errors import CommandError
from clustrix.plugin.transport import Transport
from clustrix_ssh import SSHTransport, get_transport
from tests.testbed.sshd import SSHServer

pytestmark = pytest.mark.testbed_ssh


def connect(sshd: SSHServer, **extra: object) -> SSHTransport:
    return get_transport(
        sshd.host,
        port=sshd.port,
        user=sshd.user,
        key_file=sshd.key_file,
        known_hosts_file=sshd.known_hosts,
        **extra,  # type: ignore[arg-type]
    )


def test_transport_satisfies_the_core_protocol(sshd: SSHServer) -> None:
    assert isinstance(connect(sshd), Transport)


def test_run_returns_output_and_exit_code_of_the_remote_user(sshd: SSHServer) -> None:
    transport = connect(sshd)
    result = transport.run(["sh", "-c", "id -un; echo oops >&2; exit 3"])
    assert (result.returncode, result.stdout, result.stderr) == (3, f"{sshd.user}\n", "oops\n")
    with pytest.raises(CommandError, match="exited 3"):
        transport.run(["sh", "-c", "exit 3"], check=True)


def test_run_passes_stdin_env_and_cwd(sshd: SSHServer) -> None:
    transport = connect(sshd)
    transport.makedirs("~/cwd test")
    result = transport.run(
        ["sh", "-c", 'pwd; printf %s "$GREETING"; cat'],
        input=b"from stdin",
        env={"GREETING": "hello world"},
        cwd="~/cwd test",
    )
    assert result.stdout == f"{sshd.home}/cwd test\nhello worldfrom stdin"


def test_run_times_out(sshd: SSHServer) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        connect(sshd).run(["sleep", "5"], timeout=0.5)


def test_large_stdout_and_stderr_are_read_without_deadlock(sshd: SSHServer) -> None:
    script = "head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2"
    result = connect(sshd).run(["sh", "-c", script])
    assert len(result.stdout) == len(result.stderr) == 3_000_000


def test_files_round_trip_with_private_modes(sshd: SSHServer, tmp_path: Path) -> None:
    transport = connect(sshd)
    transport.makedirs("~/clustrix-files/a/b")
    assert stat.S_IMODE(transport.stat("~/clustrix-files/a/b").st_mode) == 0o700
    transport.write_bytes("~/clustrix-files/a/b/data.bin", b"\x00\x01payload")
    info = transport.stat("~/clustrix-files/a/b/data.bin")
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_size == 9
    assert transport.read_bytes("~/clustrix-files/a/b/data.bin") == b"\x00\x01payload"
    assert transport.listdir("~/clustrix-files/a/b") == ["data.bin"]  # no temporary file left behind
    local = tmp_path / "local.bin"
    local.write_bytes(b"x" * 100_000)
    transport.put(local, "~/clustrix-files/put.bin")
    assert transport.read_bytes("~/clustrix-files/put.bin") == local.read_bytes()
    assert transport.exists("~/clustrix-files/put.bin") and not transport.exists("~/clustrix-files/nope")
    with pytest.raises(FileNotFoundError):
        transport.read_bytes("~/clustrix-files/nope")
    with pytest.raises(FileNotFoundError):
        transport.listdir("~/clustrix-files/nope")


def test_expand_maps_tilde_to_the_remote_home(sshd: SSHServer) -> None:
    transport = connect(sshd)
    assert transport.expand("~") == sshd.home
    assert transport.expand("~/x/y") == f"{sshd.home}/x/y"
    assert transport.expand("/abs") == "/abs"


def test_one_pooled_connection_serves_many_threads(sshd: SSHServer) -> None:
    transports = {id(connect(sshd)) for _ in range(3)}
    assert len(transports) == 1
    transport = connect(sshd)
    results: list[str] = []

    def work(i: int) -> None:
        results.append(transport.run(["echo", str(i)]).stdout.strip())
        transport.write_bytes(f"~/thread-{i}", str(i).encode())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=int) == [str(i) for i in range(8)]
    assert transport.connection.generation == 1


@pytest.mark.parametrize(
    ("argv", "env", "cwd", "named"),
    [
        (["echo", "a\x00b"], None, None, "an argv element"),
        (["true"], {"X": "a\x00b"}, None, "an environment value"),
        (["true"], None, "/tmp/a\x00b", "cwd"),
    ],
)
def test_a_nul_byte_anywhere_in_a_command_is_refused_before_it_is_sent(
    argv: list[str], env: dict[str, str] | None, cwd: str | None, named: str
) -> None:
    from clustrix_ssh.command import render_command

    with pytest.raises(ValueError, match=f"{named} contains a NUL byte"):
        render_command(argv, env=env, cwd=cwd)


def test_files_work_again_after_the_sftp_session_alone_was_closed(sshd: SSHServer) -> None:
    transport = connect(sshd)
    transport.write_bytes("~/sftp-again.txt", b"x")
    transport.connection.sftp().close()  # the server ended the session; the SSH link is still up
    assert transport.connection.is_active()
    assert transport.read_bytes("~/sftp-again.txt") == b"x"
