"""The directory of the login sockets is the user's alone: a co-user can neither reach nor plant it.

Whoever connects to a master socket runs commands as the user on the cluster, with no code
asked. The directory is created 0700 and checked (owner, mode, not a link) before each use.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from clustrix_ssh import client, login, openssh
from clustrix_ssh.errors import ControlDirError
from tests.ssh.test_openssh import write_ssh_config
from tests.testbed.cousers import MALLORY, as_mallory, ids
from tests.testbed.sshd import SSHServer


@pytest.fixture
def open_parent(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A parent everyone may enter (as /run/user or a home often is): only the control dir itself protects."""
    parent = Path(tempfile.mkdtemp(prefix="cx-cm-", dir="/tmp"))
    parent.chmod(0o755)
    monkeypatch.setenv("CLUSTRIX_CONTROL_DIR", str(parent / "ssh"))
    yield parent
    openssh.close_all()
    client.forget()
    shutil.rmtree(parent, ignore_errors=True)


def test_the_directory_is_made_private_to_the_user(open_parent: Path) -> None:
    os.umask(old := os.umask(0))  # the most open umask: the mode must not come from it
    try:
        directory = login.control_dir()
    finally:
        os.umask(old)
    info = directory.lstat()
    assert directory == open_parent / "ssh"
    assert (info.st_uid, info.st_mode & 0o777) == (os.geteuid(), 0o700)


def test_a_directory_others_can_enter_is_refused_with_the_fix(open_parent: Path) -> None:
    (open_parent / "ssh").mkdir(mode=0o755)
    (open_parent / "ssh").chmod(0o755)
    with pytest.raises(ControlDirError, match=r"mode 0755.*chmod 700"):
        login.control_dir()


def test_a_link_in_place_of_the_directory_is_refused(open_parent: Path, tmp_path: Path) -> None:
    private = tmp_path / "elsewhere"
    private.mkdir(mode=0o700)
    (open_parent / "ssh").symlink_to(private)
    with pytest.raises(ControlDirError, match="not a directory"):
        login.control_path("127.0.0.1")


def test_a_directory_a_co_user_made_first_is_refused(mallory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    planted = mallory / "ssh"
    assert as_mallory(f"mkdir -m 700 {planted}").returncode == 0
    monkeypatch.setenv("CLUSTRIX_CONTROL_DIR", str(planted))
    uid, _ = ids(MALLORY)
    with pytest.raises(ControlDirError, match=f"belongs to uid {uid}, not to you"):
        login.control_dir()


def test_a_co_user_cannot_use_the_login_socket(
    mallory: Path, open_parent: Path, sshd: SSHServer, tmp_path: Path
) -> None:
    config = write_ssh_config(tmp_path / "cfg", sshd)
    config.chmod(0o644)
    target = login.LoginTarget(host="tb", config_file=str(config))
    status = login.open_master(target, interactive=False)
    assert status.live and status.control_path is not None
    socket_path = status.control_path
    # her own ssh, pointed at the user's socket, and a raw connect: both stop at the directory
    tried = as_mallory(
        f"ssh -F /dev/null -o ControlPath={socket_path} -O check tb; echo rc=$?; "
        f"ssh -F /dev/null -o BatchMode=yes -o ControlMaster=no -S {socket_path} tb id; echo rc=$?; "
        f"python3 -c \"import socket; socket.socket(socket.AF_UNIX).connect('{socket_path}')\"; echo rc=$?; "
        f"ls {socket_path.rsplit('/', 1)[0]}; echo rc=$?"
    )
    assert "rc=0" not in tried.stdout, tried
    assert tried.stderr.count("Permission denied") >= 3, tried
    assert sshd.user not in tried.stdout  # nothing ran as the user
    assert login.master_status(target).live  # and the user's own login is untouched
    assert login.close_master(target)


def test_auto_neither_makes_the_directory_nor_fails_on_an_unsafe_one(open_parent: Path) -> None:
    assert client.decide(login.LoginTarget(host="127.0.0.1", config_file="/dev/null"), "auto").client == "paramiko"
    assert not (open_parent / "ssh").exists()  # a paramiko user gets no directory made for them
    (open_parent / "ssh").mkdir(mode=0o755)
    (open_parent / "ssh").chmod(0o755)
    choice = client.decide(login.LoginTarget(host="127.0.0.1", config_file="/dev/null"), "auto")
    assert choice.client == "paramiko" and "chmod 700" in choice.reason
