"""A second unprivileged account on the testbed's login node, for the attack tests: ``clustrix-mallory``.

The user's jobs run as ``clustrix-test`` (the sshd and SLURM testbeds); mallory is another
ordinary user of the same host, as on a shared login node. The attack tests run her
programs with ``runuser`` and check that nothing she can do reaches the user's jobs,
secrets or results.
"""

from __future__ import annotations

import os
import pickle
import pwd
import secrets
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.testbed.sshd import ensure_user
from tests.testbed.system import unavailable, wait_for

MALLORY = "clustrix-mallory"
_RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


def ensure_mallory() -> pwd.struct_passwd:
    """Create the co-user if missing (needs root, like the other testbeds)."""
    if os.geteuid() != 0:
        raise RuntimeError("the co-user testbed needs root (useradd, runuser)")
    return ensure_user(MALLORY)


@pytest.fixture
def mallory() -> Iterator[Path]:
    """mallory exists on the host and has a fresh world-writable directory in /tmp (a fixture to import)."""
    try:
        ensure_mallory()
    except Exception as exc:
        unavailable(f"co-user {MALLORY}: {type(exc).__name__}: {exc}")
        raise
    directory = mallory_dir()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def as_mallory(script: str) -> subprocess.CompletedProcess[str]:
    """Run a shell script as mallory and wait for it."""
    return subprocess.run(
        [_RUNUSER, "-u", MALLORY, "--", "sh", "-c", script],
        capture_output=True,
        text=True,
        check=False,
        env={**_ENV, "HOME": pwd.getpwnam(MALLORY).pw_dir},
    )


def start_as_mallory(argv: list[str]) -> subprocess.Popen[str]:
    """Start a program as mallory in the background (a watcher); stop it with its own stop file."""
    return subprocess.Popen(
        [_RUNUSER, "-u", MALLORY, "--", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**_ENV, "HOME": pwd.getpwnam(MALLORY).pw_dir},
    )


def mallory_dir() -> Path:
    """A fresh directory of mallory's in /tmp, writable by everyone (where she leaves her tools)."""
    path = Path(tempfile.mkdtemp(prefix="mallory-", dir="/tmp"))
    account = pwd.getpwnam(MALLORY)
    os.chown(path, account.pw_uid, account.pw_gid)
    path.chmod(0o777)
    return path


def evil_wheel(directory: Path, marker: Path) -> Path:
    """A wheel whose ``.pth`` file runs at every start of the Python it is installed in.

    The code appends the uid it runs as to ``marker``: proof that mallory's code ran as
    whoever started that Python.
    """
    wheel = directory / "evil-1.0-py3-none-any.whl"
    pth = f"import os; open({str(marker)!r}, 'a').write(str(os.getuid()) + chr(10))\n"
    files = {
        "evil.pth": pth,
        "evil-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n",
        "evil-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + "evil-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
        archive.writestr("evil-1.0.dist-info/RECORD", record)
    wheel.chmod(0o644)
    return wheel


#: mallory's ``/proc`` watcher: reads the canary from a file (never from its own argv),
#: scans every process's arguments until the stop file appears, then prints
#: ``SCANS`` and each command line that held the canary.
PROC_WATCHER = r"""
import os, sys
canary = open(sys.argv[1], "rb").read().strip()
ready, stop = sys.argv[2], sys.argv[3]
me, seen, scans = str(os.getpid()), set(), 0
while not os.path.exists(stop):
    for pid in os.listdir("/proc"):
        if pid.isdigit() and pid != me:
            try:
                with open("/proc/" + pid + "/cmdline", "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            if canary in data:
                seen.add(data.replace(b"\0", b" ").decode(errors="replace")[:300])
    scans += 1
    if scans == 1:
        open(ready, "w").close()
print(scans)
for line in sorted(seen):
    print(line.replace("\n", " "))
"""

#: mallory's requirements swapper: as soon as a ``*.requirements.txt`` appears in the
#: directory she owns, she replaces it (rename over it) with one naming her wheel. Prints
#: the names she swapped when the stop file appears.
REQUIREMENTS_SWAPPER = r"""
import os, sys
envs, wheel, ready, stop = sys.argv[1:5]
swapped = []
open(ready, "w").close()
while not os.path.exists(stop):
    try:
        names = os.listdir(envs)
    except OSError:
        continue
    for name in names:
        if name.endswith(".requirements.txt") and name not in swapped:
            tmp = os.path.join(envs, ".mallory.tmp")
            with open(tmp, "w") as fh:
                fh.write(wheel + "\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, os.path.join(envs, name))
            swapped.append(name)
print(" ".join(swapped))
"""


def ids(user: str) -> tuple[int, int]:
    account = pwd.getpwnam(user)
    return account.pw_uid, account.pw_gid


def wait_for_flag_then_vanish(flag: str) -> None:
    """A call that writes no outcome of its own: it waits for the test's flag, then its process ends.

    (Test modules ship it by value: ``cloudpickle.register_pickle_by_value(cousers)``.)
    """
    import os as _os
    import time as _time

    while not _os.path.exists(flag):
        _time.sleep(0.05)
    _os._exit(0)


class Forged:
    """Unpickling this creates the directory ``path``: proof that a forged outcome was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.path,))


def plant_outcome(outcome: Path, kind: str, *, user: str, directory: Path, unpickled: Path) -> str:
    """Put a forged outcome at ``outcome``; return the reason clustrix must give for refusing it.

    ``planted``: a file owned by mallory. ``symlink``: a link (owned by ``user``) to a
    forged file that ``user`` owns, privately, in mallory's ``directory``: only the link
    makes it look like the job's.
    """
    forged = pickle.dumps(Forged(str(unpickled)))
    if kind == "planted":
        outcome.write_bytes(forged)
        os.chown(outcome, *ids(MALLORY))
        outcome.chmod(0o644)
        return "belongs to another user"
    target = directory / "forged.pkl"
    target.write_bytes(forged)
    os.chown(target, *ids(user))
    target.chmod(0o600)
    os.symlink(target, outcome)
    os.lchown(outcome, *ids(user))
    return "is a symbolic link"


def read_canary() -> str:
    """A job's function: the value of ``CLUSTRIX_CANARY`` in the job's environment."""
    import os as _os

    return _os.environ["CLUSTRIX_CANARY"]


class ProcWatch:
    """mallory scans every process's arguments for a fresh canary while the ``with`` block runs.

    After the block, ``scans`` counts her passes over ``/proc`` and ``seen`` lists the
    command lines that held the canary.
    """

    def __init__(self, directory: Path, python: str = "/usr/bin/python3") -> None:
        self.directory = directory
        self.python = python
        self.canary = f"canary-{secrets.token_hex(8)}"
        self.scans = 0
        self.seen: list[str] = []
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> ProcWatch:
        canary_file = self.directory / "canary"
        canary_file.write_text(self.canary)
        canary_file.chmod(0o644)
        ready, stop = self.directory / "ready", self.directory / "stop"
        self._process = start_as_mallory([self.python, "-c", PROC_WATCHER, str(canary_file), str(ready), str(stop)])
        wait_for(ready.exists, timeout=30, what="mallory's /proc watcher")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._process is not None
        (self.directory / "stop").touch()
        out, err = self._process.communicate(timeout=60)
        lines = out.splitlines()
        if self._process.returncode != 0 or not lines:
            raise RuntimeError(f"mallory's /proc watcher failed: {err}")
        self.scans, self.seen = int(lines[0]), lines[1:]
