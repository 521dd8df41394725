"""Two-factor login (key AND a one-time code), against the real two-factor sshd of tests/testbed/two_factor.py.

The login node asks for the key and then a TOTP code through PAM; ``oathtool`` computes the
code, typed into a real pseudo-terminal as a user would. sshd logs one ``Accepted
keyboard-interactive/pam`` line per two-factor login, which the tests count.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.testbed import two_factor as two_factor_testbed
from tests.testbed.system import start_or_unavailable, wait_for
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
    env.update(HOME=str(home), CLUSTRIX_DATA_DIR=str(home / "registry"), PYTHONPATH=str(REPO))
    # the default socket directory under a test's deep HOME would be too long a path for a unix socket
    env["CLUSTRIX_CONTROL_DIR"] = str(short_dir(home))
    env.update(extra)
    return env


def short_dir(home: Path) -> Path:
    """A not yet existing directory with a short path, for the login sockets, made once per ``home``."""
    link = home / ".control-dir"
    if not link.exists():
        path = Path(tempfile.mkdtemp(prefix="cx2fa-", dir="/tmp"))
        path.rmdir()  # clustrix creates it, private
        link.write_text(str(path))
    return Path(link.read_text())


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


# -- one login with the system OpenSSH (clustrix login), shared by every process ------------------------------


@pytest.fixture(scope="module")
def slurm_cluster() -> object:
    """The SLURM testbed (reachable from the two-factor login node, which runs on its machine)."""
    from tests.testbed import slurm as slurm_testbed
    from tests.testbed.fixtures import started

    return started("SLURM", slurm_testbed.start)


@pytest.fixture(scope="module")
def sge_cell() -> object:
    """The Grid Engine testbed (reachable from the two-factor login node too)."""
    from tests.testbed import sge as sge_testbed
    from tests.testbed.fixtures import started

    return started("SGE", sge_testbed.start)


class Site:
    """A user's machine: an ssh_config for the two-factor host, a clustrix config, a private socket directory."""

    def __init__(self, bed: TwoFactorTestbed, home: Path, *, host: str = "cx-2fa", **config: object) -> None:
        self.bed = bed
        self.home = home
        self.host = host
        self.ssh_config = bed.write_ssh_config(home / "ssh_config")
        self.control_dir = short_dir(home)
        values = {
            "cluster_type": "ssh",
            "cluster_host": host,
            "ssh_config_file": str(self.ssh_config),
            "replicate_distributions": ["clustrix-core"],
            "remote_work_dir": "~/.clustrix/two-factor",
            **config,
        }
        self.config_file = home / "clustrix.toml"
        self.config_file.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))

    def env(self, **extra: str) -> dict[str, str]:
        return python_env(self.home, CLUSTRIX_CONFIG=str(self.config_file), **extra)

    def clustrix(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The clustrix command in a new process without a terminal."""
        return subprocess.run(
            [sys.executable, "-m", "clustrix.cli", *args],
            env=self.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )

    def python(self, script: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """A Python program in a new process without a terminal."""
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)],
            env=self.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )

    def login(self) -> str:
        """``clustrix login`` in a real terminal, the code typed at ssh's prompt, as a person does."""
        code = self.bed.code()
        shown = run_in_pty(
            [sys.executable, "-m", "clustrix.cli", "login"],
            self.env(),
            {two_factor_testbed.PROMPT.encode(): code.encode() + b"\n"},
        ).decode(errors="replace")
        assert f"logged in to {self.host}" in shown, shown
        assert code not in shown.split(two_factor_testbed.PROMPT, 1)[1], shown
        return shown

    def master_pid(self) -> int:
        from clustrix_ssh import login

        os.environ["CLUSTRIX_CONTROL_DIR"] = str(self.control_dir)
        try:
            status = login.master_status(login.LoginTarget(host=self.host, config_file=str(self.ssh_config)))
        finally:
            del os.environ["CLUSTRIX_CONTROL_DIR"]
        assert status.live and status.pid, status
        return status.pid

    def logout(self) -> None:
        self.clustrix("logout")
        shutil.rmtree(self.control_dir, ignore_errors=True)


@pytest.fixture
def site(two_factor: TwoFactorTestbed, tmp_path: Path) -> Iterator[Site]:
    made = Site(two_factor, tmp_path)
    yield made
    made.logout()


@pytest.mark.testbed_slurm
def test_one_login_serves_three_processes_and_a_map_of_100_with_one_code(
    two_factor: TwoFactorTestbed, tmp_path: Path, slurm_cluster: object
) -> None:
    site = Site(two_factor, tmp_path, cluster_type="slurm", remote_work_dir="~/.clustrix/two-factor-slurm")
    try:
        before = two_factor.two_factor_logins()
        site.login()
        # 1: the doctor says which client, why, and until when the login lasts
        doctor = site.clustrix("doctor")
        assert doctor.returncode == 0, doctor
        assert f"[ok] ssh client: openssh (auto: a `clustrix login` master for {site.host} is live" in doctor.stdout
        assert f"[ok] ssh login: a login to {site.host} is live (clustrix login, pid" in doctor.stdout
        assert "until " in doctor.stdout, doctor.stdout
        # 2: a script maps 100 calls over SLURM and submits one more job for later
        mapped = site.python(
            """
            from clustrix import cluster
            square = cluster(lambda x: x * x)
            print(sum(square.map(range(100))))
            job = cluster(lambda: "attached")
            print(job.submit().job_id)
            """
        )
        assert mapped.returncode == 0, mapped
        total, job_id = mapped.stdout.split()
        assert int(total) == sum(x * x for x in range(100))
        # 3: another process fetches that job's result (clustrix result: Job.attach)
        result = site.clustrix("result", job_id, "--wait", "--timeout", "240")
        assert result.returncode == 0 and "attached" in result.stdout, result
        assert two_factor.two_factor_logins() == before + 1, two_factor.log()[-3000:]
    finally:
        site.logout()


def test_the_master_killed_mid_map_loses_nothing_the_map_completes_after_a_new_login(
    two_factor: TwoFactorTestbed, tmp_path: Path
) -> None:
    # the plain ssh backend: jobs run detached on the login node, with no scheduler testbed to share
    site = Site(two_factor, tmp_path)
    try:
        before = two_factor.two_factor_logins()
        site.login()
        # the calls end once this file exists; the jobs run as the test user, so not under pytest's private tmp
        shared = Path(tempfile.mkdtemp(prefix="cx2fa-stop-", dir="/tmp"))
        shared.chmod(0o755)
        stop = shared / "go"
        program = textwrap.dedent(
            f"""
            import os, sys, time
            from clustrix import cluster
            import clustrix.api.futures

            # other failures give a job up after this long; the outage below lasts longer
            clustrix.api.futures.POLL_FAILURE_LIMIT = 2.0

            @cluster(job_poll_interval=0.5)
            def slow(x):
                while not os.path.exists({str(stop)!r}):
                    time.sleep(0.2)
                return x + 1000

            futures = slow.submit_map(range(20))
            print("submitted", flush=True)
            print("results", sum(f.result(timeout=600) for f in futures), flush=True)
            """
        )
        child = subprocess.Popen(
            [sys.executable, "-c", program],
            env=site.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        stdout, stderr = StreamReader(child.stdout), StreamReader(child.stderr)
        lost = f"connection to {site.host} lost: log in again with `clustrix login {site.host}`"
        try:
            wait_for(lambda: "submitted" in stdout.text, timeout=300, what=f"the map submitted: {stderr.text}")
            os.kill(site.master_pid(), signal.SIGKILL)  # expired, the laptop asleep, the network gone
            wait_for(lambda: lost in stderr.text, timeout=120, what="the poller's 'connection lost' report")
            stop.write_text("")  # the calls finish while nobody is logged in
            time.sleep(10)  # the poller goes on polling meanwhile, and says it once
            assert child.poll() is None, f"the map ended without a login: {stdout.text} {stderr.text}"
            site.login()
            child.wait(timeout=300)
        finally:
            if child.poll() is None:
                child.kill()
            shutil.rmtree(shared, ignore_errors=True)
        stdout.join()
        stderr.join()
        assert child.returncode == 0, (stdout.text, stderr.text)
        assert stdout.text.split() == ["submitted", "results", str(sum(x + 1000 for x in range(20)))], stderr.text
        assert stderr.text.count(lost) == 1, stderr.text
        assert "clustrix.connection_back" in stderr.text, stderr.text
        assert two_factor.two_factor_logins() == before + 2
    finally:
        site.logout()


class StreamReader:
    """Collects a pipe's text on a thread, so a test can wait for a line while the process runs."""

    def __init__(self, stream: Any) -> None:
        self.text = ""
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.text += line

    def join(self) -> None:
        self._thread.join(timeout=10)


def test_a_co_user_cannot_use_the_login_socket(site: Site) -> None:
    from tests.testbed.cousers import as_mallory, ensure_mallory

    start_or_unavailable("co-user clustrix-mallory", ensure_mallory)

    site.login()
    sockets = [p for p in site.control_dir.iterdir() if p.is_socket()]
    assert len(sockets) == 1, list(site.control_dir.iterdir())
    assert site.control_dir.stat().st_mode & 0o777 == 0o700
    socket_path = sockets[0]
    tried = as_mallory(
        f"ssh -o ControlPath={shlex.quote(str(socket_path))} -O check {site.host}; echo rc=$?; "
        f"ls {shlex.quote(str(site.control_dir))}; "
        f"python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' "
        f"{shlex.quote(str(socket_path))}; echo py=$?"
    )
    assert "rc=255" in tried.stdout and "py=1" in tried.stdout, tried
    assert "Permission denied" in tried.stderr, tried.stderr
    assert socket_path.name not in tried.stdout  # she cannot even list the directory
    # the user's own processes still ride it
    assert (
        site.python(
            "from clustrix.plugin.manager import transport_for\nfrom clustrix import get_config\n"
            "print(transport_for(get_config()).run(['id', '-un']).stdout)"
        ).stdout.strip()
        == site.bed.user
    )


def test_proxyjump_through_the_bastion_with_one_login(two_factor: TwoFactorTestbed, tmp_path: Path) -> None:
    site = Site(two_factor, tmp_path, host="cx-2fa-jump")
    try:
        before = two_factor.two_factor_logins()
        bastion_log = Path(two_factor.bastion.directory) / "sshd.log"
        bastion_before = bastion_log.read_text().count("Accepted publickey for")
        site.login()
        for _ in range(2):
            doctor = site.clustrix("doctor")
            assert doctor.returncode == 0, doctor
            assert "[ok] ssh client: openssh" in doctor.stdout and "[ok] remote python:" in doctor.stdout, doctor.stdout
        ran = site.python("from clustrix import cluster\nprint(cluster(lambda: 6 * 7)())")
        assert ran.returncode == 0 and ran.stdout.strip() == "42", ran
        assert two_factor.two_factor_logins() == before + 1
        assert bastion_log.read_text().count("Accepted publickey for") == bastion_before + 1  # the one hop
    finally:
        site.logout()


@pytest.mark.parametrize("ssh_client", ["openssh", "auto"])
def test_the_openssh_client_without_a_login_fails_at_once_naming_the_host_and_the_fix(
    two_factor: TwoFactorTestbed, tmp_path: Path, ssh_client: str
) -> None:
    site = Site(two_factor, tmp_path, ssh_client=ssh_client)
    before = two_factor.two_factor_logins()
    started = time.monotonic()
    ran = site.python(
        """
        from clustrix import cluster
        try:
            cluster(abs)(-1)
        except Exception as exc:
            print(type(exc).__name__)
            print(exc)
        """,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert elapsed < 10, elapsed
    lines = ran.stdout.splitlines()
    assert lines and lines[0] == "LoginRequiredError", ran
    message = "\n".join(lines[1:])
    assert site.host in message and f"`clustrix login {site.host}`" in message and "ControlMaster" in message, message
    assert two_factor.two_factor_logins() == before


@pytest.mark.testbed_sge
def test_grid_engine_behind_the_two_factor_login_node_with_one_login(
    two_factor: TwoFactorTestbed, tmp_path: Path, sge_cell: object
) -> None:
    site = Site(two_factor, tmp_path, cluster_type="sge", remote_work_dir="~/.clustrix/two-factor-sge")
    try:
        before = two_factor.two_factor_logins()
        site.login()
        ran = site.python("from clustrix import cluster\nprint(sum(cluster(lambda x: 2 * x).map(range(10))))")
        assert ran.returncode == 0 and ran.stdout.strip() == "90", ran
        doctor = site.clustrix("doctor")
        assert doctor.returncode == 0 and "[ok] scheduler commands:" in doctor.stdout, doctor
        assert two_factor.two_factor_logins() == before + 1
    finally:
        site.logout()
