"""A one-time code for the paramiko path: asked on the terminal, never echoed; refused without one.

After the key, a two-factor site asks for a code (``keyboard-interactive``). paramiko's own
fallback prints the prompt to stdout and reads ``input()``: in a notebook or a background
poller that waits on a prompt nobody sees. Here the code is asked on the process's
controlling terminal (``/dev/tty``, echo off, as :func:`getpass.getpass`), once per
connection, which the process keeps; a process without a terminal fails at once with
:class:`~clustrix_ssh.errors.LoginRequiredError`, naming the host and the fix.
"""

from __future__ import annotations

import os
import termios
import threading
from collections.abc import Callable, Sequence
from typing import Any

import paramiko

from clustrix_ssh.errors import LoginRequiredError

#: How long a person may take to type a code (the server's own LoginGraceTime may be shorter).
TYPING_SECONDS = 300.0
#: One prompt at a time in a process: two connections opening together do not mix their questions.
_prompt_lock = threading.Lock()


def login_required(host: str, *, why: str) -> LoginRequiredError:
    """The error for a host that needs a typed code (or other prompt) this process cannot show."""
    return LoginRequiredError(
        f"{host} asks for {why} at login, and this process has no terminal to ask on (a notebook, cron, a "
        f"background job). Log in once in a terminal with `clustrix login {host}`: clustrix then rides "
        f"that login (the OpenSSH client with a master connection) from every process until it expires. "
        f"Or let your own ssh keep one, in ~/.ssh/config:\n"
        f"    Host {host}\n"
        f"        ControlMaster auto\n"
        f"        ControlPath ~/.ssh/cm-%C\n"
        f"        ControlPersist 8h\n"
        f"and log in once with `ssh {host} true` (see docs/ssh-setup.md)."
    )


def open_terminal() -> int | None:
    """The controlling terminal, opened read-write, or None when the process has none."""
    try:
        return os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return None


def read_hidden(fd: int, prompt: str) -> str:
    """Write ``prompt`` to the terminal ``fd`` and read one line with echo off (restored after)."""
    with open(fd, "r+b", buffering=0, closefd=False) as tty:
        old = termios.tcgetattr(fd)
        new = termios.tcgetattr(fd)
        new[3] &= ~termios.ECHO
        try:
            termios.tcsetattr(fd, termios.TCSAFLUSH, new)
            tty.write(prompt.encode())
            line = bytearray()
            while not line.endswith(b"\n"):
                chunk = tty.read(1)
                if not chunk:
                    break
                line += chunk
        finally:
            termios.tcsetattr(fd, termios.TCSAFLUSH, old)
            tty.write(b"\n")
    return line.decode(errors="replace").rstrip("\r\n")


def terminal_handler(host: str, fd: int) -> Callable[[str, str, Sequence[tuple[str, bool]]], list[str]]:
    """A keyboard-interactive handler that asks each of the server's prompts on the terminal ``fd``."""

    def handler(title: str, instructions: str, prompts: Sequence[tuple[str, bool]]) -> list[str]:
        answers = []
        with _prompt_lock:
            header = "\n".join(part.strip() for part in (title, instructions) if part and part.strip())
            if header:
                os.write(fd, (header + "\n").encode())
            for text, _echo in prompts:  # echoed or not, an answer to a login prompt is never shown
                answers.append(read_hidden(fd, f"{host}: {text.strip()} "))
        return answers

    return handler


def transport_factory(host: str) -> Callable[..., paramiko.Transport]:
    """paramiko's ``transport_factory`` for ``host``: its keyboard-interactive step asks on the terminal."""

    class PromptingTransport(paramiko.Transport):
        def auth_interactive_dumb(self, username: str, handler: Any = None, submethods: str = "") -> list[str]:
            fd = open_terminal()
            if fd is None:
                raise login_required(host, why="a one-time code or another typed answer (keyboard-interactive)")
            self.auth_timeout = max(self.auth_timeout or 0.0, TYPING_SECONDS)  # a person types the code
            try:
                result: list[str] = self.auth_interactive(username, terminal_handler(host, fd), submethods)
                return result
            finally:
                os.close(fd)

    return PromptingTransport
