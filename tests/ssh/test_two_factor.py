"""Two-factor login (key AND a one-time code), against the real two-factor sshd of tests/testbed/two_factor.py.

The login node asks for the key and then a TOTP code through PAM; ``oathtool`` computes the
code, typed into a real pseudo-terminal as a user would. sshd logs one ``Accepted
keyboard-interactive/pam`` line per two-factor login, which the tests count.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testbed import two_factor as two_factor_testbed
from tests.testbed.system import start_or_unavailable
from tests.testbed.two_factor import TwoFactorTestbed

pytestmark = pytest.mark.testbed_ssh

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def two_factor() -> Iterator[TwoFactorTestbed]:
    """The two-factor login node and its bastion (fails in CI, skips elsewhere, when they cannot start)."""
    bed = start_or_unavailable("two-factor sshd testbed", two_factor_testbed.start)
    yield bed
    bed.cleanup()


def python_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a child clustrix process: its own HOME and registry, no agent."""
    env = {k: v for k, v in os.environ.items() if k not in {"SSH_AUTH_SOCK", "SSH_ASKPASS", "DISPLAY"}}
    env.update(HOME=str(home), CLUSTRIX_DATA_DIR=str(home / "registry"), PYTHONPATH=str(REPO), **extra)
    return env


def run_in_pty(argv: list[str], env: dict[str, str], answers: dict[bytes, bytes], timeout: float = 60) -> bytes:
    """Run ``argv`` on a new pseudo-terminal (its controlling terminal), answering each prompt once, as a person.

    ``answers`` maps a prompt's text to what is typed there; returns everything the terminal showed.
    """
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal, stdin, stdout and stderr
        try:
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    shown = bytearray()
    pending = dict(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                if os.waitpid(pid, os.WNOHANG) != (0, 0):
                    pid = 0
                    break
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            for prompt in list(pending):
                if prompt in shown:
                    os.write(fd, pending.pop(prompt))
        else:
            raise AssertionError(f"{argv} did not end in {timeout} s; the terminal showed {bytes(shown)!r}")
    finally:
        if pid:
            os.waitpid(pid, 0)
        os.close(fd)
    assert not pending, f"never asked for {list(pending)}; the terminal showed {bytes(shown)!r}"
    return bytes(shown)


def test_paramiko_asks_for_the_code_once_on_the_terminal_and_never_echoes_it(
    two_factor: TwoFactorTestbed, tmp_path: Path
) -> None:
    server = two_factor.server
    script = textwrap.dedent(
        f"""
        from clustrix_ssh.transport import get_transport
        t = get_transport({server.host!r}, port={server.port}, user={server.user!r},
                          key_file={server.key_file!r}, known_hosts_file={server.known_hosts!r})
        for argv in (["echo", "two-factor-ok"], ["id", "-un"], ["echo", "third"]):
            print("ran:", t.run(argv).stdout.strip(), flush=True)
        """
    )
    before = two_factor.two_factor_logins()
    code = two_factor.code()
    shown = run_in_pty(
        [sys.executable, "-c", script],
        python_env(tmp_path),
        {two_factor_testbed.PROMPT.encode(): code.encode() + b"\n"},
    )
    text = shown.decode(errors="replace")
    assert f"{server.host}: {two_factor_testbed.PROMPT.strip()}" in text, text
    assert "ran: two-factor-ok" in text and f"ran: {server.user}" in text and "ran: third" in text, text
    assert code not in text, f"the code was echoed: {text!r}"
    assert text.count(two_factor_testbed.PROMPT.strip()) == 1, text  # three commands, one code
    assert two_factor.two_factor_logins() == before + 1


def test_without_a_terminal_a_host_that_asks_for_a_code_fails_at_once_naming_the_host_and_the_fix(
    two_factor: TwoFactorTestbed, tmp_path: Path
) -> None:
    server = two_factor.server
    config = server.config(remote_work_dir="~/.clustrix/two-factor")
    script = textwrap.dedent(
        f"""
        import time
        from clustrix import cluster, configure
        configure(**{config!r})
        start = time.monotonic()
        try:
            cluster(abs)(-1)
        except Exception as exc:
            print(f"{{time.monotonic() - start:.2f}}")
            print(type(exc).__name__)
            print(exc)
        """
    )
    before = two_factor.two_factor_logins()
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=python_env(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,  # no controlling terminal, as a notebook kernel or cron
    )
    elapsed = time.monotonic() - started
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and len(lines) >= 3, proc
    assert float(lines[0]) < 10 and elapsed < 20, (lines[0], elapsed)
    assert lines[1] == "LoginRequiredError", proc.stdout
    message = "\n".join(lines[2:])
    assert f"{server.host} asks for a one-time code" in message and "has no terminal" in message, message
    assert f"`clustrix login {server.host}`" in message and "ControlMaster auto" in message, message
    assert "ControlPersist 8h" in message, message
    assert two_factor.two_factor_logins() == before
