"""``clustrix doctor`` over SSH, configured only by ``CLUSTRIX_*`` variables, as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.testbed.sshd import SSHServer

pytestmark = pytest.mark.testbed_ssh


def doctor(sshd: SSHServer, home: Path, **overrides: Any) -> tuple[int, dict[str, Any]]:
    settings = {**sshd.config(), **overrides}
    env = {
        **os.environ,
        "HOME": str(home),
        "CLUSTRIX_CONFIG": str(home / "no-config.toml"),
        "XDG_DATA_HOME": str(home / "data"),
        **{f"CLUSTRIX_{key.upper()}": str(value) for key, value in settings.items()},
    }
    env.pop("SSH_AUTH_SOCK", None)
    proc = subprocess.run(
        [sys.executable, "-m", "clustrix.cli", "doctor", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_doctor_passes_every_check_against_the_sshd_with_a_pinned_host_key(
    sshd: SSHServer, isolated_home: Path
) -> None:
    code, report = doctor(sshd, isolated_home)
    assert code == 0 and report["ok"], report
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["remote python"]["detail"].startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")
    assert checks["remote work dir"]["detail"].startswith(f"{sshd.home}/.clustrix (mode 700)")


def test_doctor_fails_on_an_unknown_host_key_and_says_how_to_trust_it(sshd: SSHServer, isolated_home: Path) -> None:
    empty = isolated_home / "empty_known_hosts"
    empty.write_text("")
    code, report = doctor(sshd, isolated_home, known_hosts_file=str(empty))
    assert code == 1 and not report["ok"]
    (failure,) = [c for c in report["checks"] if not c["ok"]]  # nothing after the connection is attempted
    assert failure["check"] == "connection (host key checked)"
    assert "UnknownHostKeyError" in failure["detail"] and "ssh-keyscan" in failure["detail"], report


def test_doctor_fails_on_a_python_executable_without_cloudpickle(sshd: SSHServer, isolated_home: Path) -> None:
    code, report = doctor(sshd, isolated_home, python_executable="/usr/bin/python3")
    assert code == 1 and not report["ok"]
    (failure,) = [c for c in report["checks"] if not c["ok"]]
    assert failure["check"] == "remote python"
    assert "No module named 'cloudpickle'" in failure["detail"], report


def test_a_tilde_in_python_executable_is_the_remote_users_home(sshd: SSHServer, isolated_home: Path) -> None:
    # ~/venvs/sim/bin/python exists only in the remote user's home: a Python without clustrix in it
    made = sshd.run_as_user(
        "mkdir -p ~/venvs/sim/bin && printf '#!/bin/sh\\nexec /usr/bin/python3 \"$@\"\\n' > ~/venvs/sim/bin/python "
        "&& chmod 755 ~/venvs/sim/bin/python"
    )
    assert made.returncode == 0, made
    code, report = doctor(sshd, isolated_home, python_executable="~/venvs/sim/bin/python")
    (failure,) = [c for c in report["checks"] if not c["ok"]]
    assert failure["check"] == "remote python"
    # it ran (expanded remotely, not taken as a file named '~'), and it lacks what the ssh backend's jobs import
    # (the runner file ships with each job: cloudpickle is all they need)
    assert "No module named 'cloudpickle'" in failure["detail"], report
    assert code == 1


def test_doctor_passes_with_a_home_too_deep_for_a_login_socket_when_paramiko_reaches_the_host(
    sshd: SSHServer, isolated_home: Path
) -> None:
    # a unix socket path has at most 107 bytes: a deep home cannot hold one, which only OpenSSH logins need
    deep = isolated_home / ("d" * 60) / ("e" * 60)
    (deep / ".ssh").mkdir(parents=True, mode=0o700)
    code, report = doctor(sshd, deep)
    assert code == 0 and report["ok"], [c for c in report["checks"] if not c["ok"]]
    (login,) = [c for c in report["checks"] if c["check"] == "ssh login"]
    assert "too long for a unix socket" in login["detail"] and "paramiko" in login["detail"]
