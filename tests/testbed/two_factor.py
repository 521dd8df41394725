"""A login node with two-factor login, as many HPC sites have: key AND a TOTP code, through PAM.

:func:`start` brings up two real sshds on 127.0.0.1 (see :mod:`tests.testbed.sshd`):

- the login node, which asks for the user's key and then a one-time code
  (``AuthenticationMethods publickey,keyboard-interactive:pam``). Its PAM stack is Debian's
  ``libpam-google-authenticator``; the code comes from ``oathtool``. sshd names its PAM service
  after the program name it runs as, so it runs as a symlink ``sshd-cx-2fa-PORT`` with its own
  ``/etc/pam.d/sshd-cx-2fa-PORT``: the machine's own sshd PAM stack is never touched. It runs on
  this machine, so whatever scheduler testbed is up (SLURM, SGE) is reachable from it, as from
  the key-only sshd of the other tests.
- a bastion with key login only, for ``ProxyJump``.

``LogLevel VERBOSE`` makes the login node log ``Accepted keyboard-interactive/pam for USER`` once
per two-factor login: :meth:`TwoFactorTestbed.two_factor_logins` counts them.
"""

from __future__ import annotations

import base64
import os
import pwd
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path

import attrs

from tests.testbed.sshd import SSHD, TEST_USER, SSHServer, start_sshd
from tests.testbed.system import apt_install

PACKAGES = ["openssh-server", "openssh-client", "libpam-google-authenticator", "oathtool"]
PAM_DIR = Path("/etc/pam.d")
#: what sshd logs once per completed two-factor login (LogLevel VERBOSE)
ACCEPTED_CODE = "Accepted keyboard-interactive/pam for "
#: the prompt pam_google_authenticator shows
PROMPT = "Verification code: "


def render_pam(secret_file: Path) -> str:
    """The PAM service of the login node: the TOTP code is the only PAM step (the key is sshd's)."""
    return "\n".join(
        [
            "# clustrix testbed: two-factor sshd (tests/testbed/two_factor.py); removed when the testbed stops",
            f"auth required pam_google_authenticator.so secret={secret_file}",
            "account required pam_permit.so",
            "session required pam_permit.so",
            "",
        ]
    )


def two_factor_overrides() -> tuple[str, ...]:
    """sshd_config lines (placed first: sshd keeps a keyword's first value) for key AND code."""
    return (
        "UsePAM yes",
        "KbdInteractiveAuthentication yes",
        "AuthenticationMethods publickey,keyboard-interactive:pam",
    )


@attrs.define
class TwoFactorTestbed:
    """The two-factor login node, its bastion, the user's TOTP secret and the PAM file to remove."""

    server: SSHServer
    bastion: SSHServer
    secret: str = attrs.field(repr=False)
    pam_file: Path

    @property
    def user(self) -> str:
        return self.server.user

    def code(self) -> str:
        """The current TOTP code (reusable within its 30 s window: the secret file has no DISALLOW_REUSE)."""
        return subprocess.run(
            ["oathtool", "--totp", "-b", self.secret], capture_output=True, text=True, check=True
        ).stdout.strip()

    def log(self) -> str:
        return (Path(self.server.directory) / "sshd.log").read_text(errors="replace")

    def two_factor_logins(self) -> int:
        """Completed two-factor logins since the login node started."""
        return self.log().count(ACCEPTED_CODE)

    def write_ssh_config(self, path: Path, *, control_dir: Path | None = None) -> Path:
        """An OpenSSH client config with three aliases: ``cx-2fa`` (the login node), ``cx-bastion``
        and ``cx-2fa-jump`` (the login node through the bastion, ``ProxyJump``).

        With ``control_dir``, ``cx-2fa`` and ``cx-2fa-jump`` share masters there (``ControlMaster auto``).
        """
        known = f"{self.server.known_hosts} {self.bastion.known_hosts}"
        master = (
            []
            if control_dir is None
            else ["    ControlMaster auto", f"    ControlPath {control_dir}/cm-%C", "    ControlPersist 10m"]
        )

        def host(alias: str, server: SSHServer, *extra: str) -> list[str]:
            return [
                f"Host {alias}",
                f"    HostName {server.host}",
                f"    Port {server.port}",
                f"    User {server.user}",
                f"    IdentityFile {server.key_file}",
                "    IdentitiesOnly yes",
                f"    UserKnownHostsFile {known}",
                "    StrictHostKeyChecking yes",
                *extra,
            ]

        lines = [
            *host("cx-2fa", self.server, *master),
            *host("cx-bastion", self.bastion),
            *host("cx-2fa-jump", self.server, "    ProxyJump cx-bastion", *master),
            "",
        ]
        path.write_text("\n".join(lines))
        path.chmod(0o600)
        return path

    def write_askpass(self, path: Path) -> Path:
        """A program that prints the current code, for ``SSH_ASKPASS`` (a login without a terminal)."""
        path.write_text(f"#!/bin/sh\nexec oathtool --totp -b {self.secret}\n")
        path.chmod(0o700)
        return path

    def cleanup(self) -> None:
        self.server.cleanup()
        self.bastion.cleanup()
        self.pam_file.unlink(missing_ok=True)
        Path(self.server.program).unlink(missing_ok=True)


def _prepare_two_factor(user: str, secret: str) -> tuple[list[Path], Callable[[Path, int], str]]:
    created: list[Path] = []

    def prepare(directory: Path, port: int) -> str:
        account = pwd.getpwnam(user)
        secret_file = directory / "google_authenticator"
        # line 1 the secret, then options; no DISALLOW_REUSE: a code may serve several logins in its window
        secret_file.write_text(f'{secret}\n" TOTP_AUTH\n" WINDOW_SIZE 3\n')
        os.chown(secret_file, account.pw_uid, account.pw_gid)
        secret_file.chmod(0o400)  # the module refuses a secret file others can read
        name = f"sshd-cx-2fa-{port}"
        pam_file = PAM_DIR / name
        pam_file.write_text(render_pam(secret_file))
        created.append(pam_file)
        program = directory / name  # sshd re-executes itself by this absolute path: the name stays
        program.symlink_to(SSHD)
        return str(program)

    return created, prepare


def start(user: str = TEST_USER) -> TwoFactorTestbed:
    """Install the packages, start the two-factor login node and the bastion."""
    apt_install(PACKAGES)
    secret = base64.b32encode(secrets.token_bytes(20)).decode()
    created, prepare = _prepare_two_factor(user, secret)
    try:
        server = start_sshd(user, override_config=two_factor_overrides(), prepare=prepare)
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        raise
    try:
        bastion = start_sshd(user)
    except BaseException:
        server.cleanup()
        for path in created:
            path.unlink(missing_ok=True)
        raise
    return TwoFactorTestbed(server=server, bastion=bastion, secret=secret, pam_file=created[0])
