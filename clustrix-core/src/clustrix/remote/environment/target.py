"""The remote ``python3`` as an install target: its wheel tags, and whether it reaches a package index (pure).

The venv build script (:mod:`~clustrix.remote.environment.venv`) runs :data:`PROBE` with the
remote ``python3`` in the same command that checks its version, when a venv must be built. The
probe prints one ``clustrix-env: target JSON`` line: the facts a wheel's tags are matched
against (implementation, version, ``SOABI``, ``sysconfig.get_platform()``, the C library) and,
unless told not to, whether the index the remote pip would use answers at all (any HTTP answer
counts; no route, a refused connection or five silent seconds do not). :func:`parse_target`
turns the line into a :class:`Target`: the values of pip's ``--platform``, ``--python-version``,
``--implementation`` and ``--abi``, and :meth:`Target.accepts` for a wheel's file name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from clustrix.remote.scripts import SAFE_SYS_PATH

#: The probe, run as ``python3 -I -c PROBE CHECK`` (``CHECK`` is ``1`` to try the index). The index is
#: ``$CX_INDEX_URL`` (``pip_index_url``: in the environment, never in a process's arguments, as it may
#: hold a password), else ``$PIP_INDEX_URL``, the user's pip.conf, or PyPI.
#: Exits 0 when the index answered, 3 when it did not or was not asked (wheels must be shipped).
PROBE = (
    SAFE_SYS_PATH
    + r"""
import json, os, platform, sysconfig
facts = {"impl": sys.implementation.name, "version": list(sys.version_info[:2]),
         "soabi": sysconfig.get_config_var("SOABI") or "", "platform": sysconfig.get_platform(),
         "libc": list(platform.libc_ver()), "gil_disabled": bool(sysconfig.get_config_var("Py_GIL_DISABLED"))}
url = os.environ.get("CX_INDEX_URL") or os.environ.get("PIP_INDEX_URL", "")
if not url:
    import configparser
    home = os.path.expanduser("~")
    files = ["/etc/pip.conf", "/etc/xdg/pip/pip.conf", os.path.join(home, ".pip", "pip.conf"),
             os.path.join(os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"), "pip", "pip.conf"),
             os.environ.get("PIP_CONFIG_FILE", "")]
    parser = configparser.RawConfigParser()
    try:
        parser.read([f for f in files if f])
        for section in ("global", "install", "download"):
            url = parser.get(section, "index-url", fallback="") or parser.get(section, "index_url", fallback="") or url
    except (configparser.Error, OSError):
        pass
import urllib.parse
parts = urllib.parse.urlsplit((url or "https://pypi.org/simple/").split()[0])
bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()  # no password in the report
facts["index"] = bare
if sys.argv[1] == "1":
    import ssl, urllib.error, urllib.request
    try:
        urllib.request.urlopen(bare.rstrip("/") + "/pip/", timeout=5).close()
        facts["reachable"] = True
    except urllib.error.HTTPError:
        facts["reachable"] = True
    except urllib.error.URLError as exc:
        facts["reachable"] = isinstance(exc.reason, ssl.SSLError)
    except (OSError, ValueError):
        facts["reachable"] = False
print("clustrix-env: target " + json.dumps(facts))
sys.exit(0 if facts.get("reachable") else 3)
"""
)

_ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


@attrs.frozen(kw_only=True)
class Target:
    """A remote Python's wheel tags, in the words of ``pip download``'s options."""

    implementation: str  # "cp", "pp"
    python_version: str  # "3.11"
    abis: tuple[str, ...]  # ("cp311",); pip adds abi3 and none itself
    platforms: tuple[str, ...]  # most specific first: ("manylinux_2_36_x86_64", ..., "linux_x86_64")
    reachable: bool | None = None  # whether the index answered (None: not asked)
    index: str = ""  # the index the probe asked (credentials removed)

    @property
    def key(self) -> str:
        """A short name for this target (the client's download folder)."""
        text = "-".join([self.implementation + self.python_version.replace(".", ""), self.abis[0], self.platforms[-1]])
        return re.sub(r"[^A-Za-z0-9_.-]", "_", text)

    def pip_options(self) -> list[str]:
        """``--platform ... --python-version ... --implementation ... --abi ...`` for ``pip download``."""
        options = []
        for platform in self.platforms:
            options += ["--platform", platform]
        options += ["--python-version", self.python_version, "--implementation", self.implementation]
        for abi in self.abis:
            options += ["--abi", abi]
        return options

    def accepts(self, filename: str) -> bool:
        """True when the wheel ``filename`` installs into this Python (its tags, as pip matches them)."""
        tags = wheel_tags(filename)
        if tags is None:
            return False
        major, minor = (int(x) for x in self.python_version.split("."))
        interpreters = {f"py{major}", f"py{major}{minor}", f"{self.implementation}{major}{minor}"}
        interpreters |= {f"py{major}{m}" for m in range(minor)}
        stable = {f"cp{major}{m}" for m in range(2, minor + 1)} if self.implementation == "cp" else set()
        platforms = {*self.platforms, "any"}
        for python, abi, platform in tags:
            if platform not in platforms:
                continue
            if python in interpreters and (abi in self.abis or abi == "none"):
                return True
            if abi == "abi3" and python in stable:
                return True
        return False


def wheel_tags(filename: str) -> set[tuple[str, str, str]] | None:
    """The (python, abi, platform) tags of a wheel file name (compressed tag sets expanded), or None."""
    if not filename.endswith(".whl"):
        return None
    parts = filename[:-4].split("-")
    if len(parts) not in (5, 6):
        return None
    pythons, abis, platforms = parts[-3:]
    return {(p, a, s) for p in pythons.split(".") for a in abis.split(".") for s in platforms.split(".")}


def wheel_name_version(filename: str) -> tuple[str, str] | None:
    """The normalized distribution name and the version in a wheel file name, or None."""
    parts = filename[:-4].split("-") if filename.endswith(".whl") else []
    if len(parts) not in (5, 6):
        return None
    return re.sub(r"[-_.]+", "-", parts[0]).lower(), parts[1]


def linux_platforms(arch: str, libc: str, libc_version: str) -> list[str]:
    """pip ``--platform`` values a Linux ``arch`` with this C library takes, most specific first."""
    arch = _ARCH_ALIASES.get(arch, arch)
    found = re.match(r"(\d+)\.(\d+)", libc_version or "")
    tags: list[str] = []
    if found and libc == "glibc":
        major, minor = int(found.group(1)), int(found.group(2))
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        for m in range(minor, 4, -1):
            if major != 2:
                break
            tags.append(f"manylinux_2_{m}_{arch}")
            if m == 17 or (m in legacy and arch in ("x86_64", "i686")):
                tags.append(f"{legacy[m]}_{arch}")
    elif found and libc == "musl":
        tags += [f"musllinux_{found.group(1)}_{m}_{arch}" for m in range(int(found.group(2)), -1, -1)]
    tags.append(f"linux_{arch}")
    return tags


def target_from_facts(facts: Mapping[str, Any]) -> Target:
    """The :class:`Target` of the facts the probe printed."""
    name = str(facts.get("impl", "cpython"))
    implementation = {"cpython": "cp", "pypy": "pp", "graalpy": "gp"}.get(name, name[:2])
    major, minor = (int(x) for x in facts.get("version", (3, 0)))
    soabi = str(facts.get("soabi") or "")
    if implementation == "cp":
        abi = f"cp{major}{minor}" + ("t" if facts.get("gil_disabled") else "")
        if soabi.startswith("cpython-") and soabi.split("-")[1].endswith("d"):
            abi += "d"
    else:  # pypy310-pp73-x86_64-linux-gnu -> pypy310_pp73, as packaging's generic ABI
        abi = "_".join(soabi.split("-")[:2]).replace(".", "_") or "none"
    platform = str(facts.get("platform", "")).replace("-", "_").replace(".", "_")
    libc, libc_version = [*(facts.get("libc") or ()), "", ""][:2]
    if platform.startswith("linux_"):
        platforms = linux_platforms(platform[len("linux_") :], str(libc), str(libc_version))
        if not libc:  # no glibc found: musl (Alpine); pip's tags need its version, 1.2 is today's
            platforms = [*linux_platforms(platform[len("linux_") :], "musl", "1.2")[:-1], *platforms]
    else:
        platforms = [platform]
    reachable = facts.get("reachable")
    return Target(
        implementation=implementation,
        python_version=f"{major}.{minor}",
        abis=(abi,),
        platforms=tuple(platforms),
        reachable=None if reachable is None else bool(reachable),
        index=str(facts.get("index", "")),
    )


def parse_target(stdout: str) -> Target | None:
    """The :class:`Target` of the last ``clustrix-env: target`` line in a script's output, or None."""
    lines = [line for line in stdout.splitlines() if line.startswith("clustrix-env: target ")]
    if not lines:
        return None
    try:
        facts = json.loads(lines[-1].split(" ", 2)[2])
    except (json.JSONDecodeError, IndexError):
        return None
    return target_from_facts(facts) if isinstance(facts, dict) else None
