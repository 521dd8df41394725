"""The Kubernetes binaries built from Debian's ``kubernetes`` source package.

No ready-made Kubernetes binary is installable here, but Debian ships the full
Kubernetes source tree (with ``vendor/``) as a source package, which builds with
Debian's Go. The source lists live in a private apt directory under
:data:`CACHE` so ``/etc/apt`` is never touched. The binaries (:data:`BINARIES`: the
control plane and the node) are cached one file each by the source package's version
(``/var/cache/clustrix-testbed/k8s-<version>/``): a machine that has built them once
starts the stack in seconds, and a cache that holds only some of them (an older
testbed built the control plane alone) gets only the missing ones built. Go's own
build cache stays under ``k8s-src/home`` so such a second build recompiles only the
packages the first did not need. The source tree is removed after a successful build
(it takes ~2.2 GB).

Run as a script (``python -m tests.testbed.k8s_build``) to build ahead of the tests.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path(os.environ.get("CLUSTRIX_K8S_CACHE", "/var/cache/clustrix-testbed"))
SRC = CACHE / "k8s-src"
#: Go's build cache, kept outside the source tree (which is removed) while some binary is still missing
GOCACHE = SRC / "gocache"
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager")
NODE = ("kubelet", "kube-scheduler", "kube-proxy")
BINARIES = CONTROL_PLANE + NODE
PACKAGES = ["golang-go", "etcd-server", "openssl", "rsync", "make", "util-linux", "debian-archive-keyring"]

_SOURCES = """\
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def _apt_options() -> list[str]:
    return [
        "-o",
        "Dir::Etc::SourceList=/dev/null",
        "-o",
        f"Dir::Etc::SourceParts={SRC / 'parts'}",
        "-o",
        f"Dir::State::Lists={SRC / 'lists'}",
        "-o",
        f"Dir::Cache={SRC / 'cache'}",
    ]


def parse_showsrc_version(text: str) -> str | None:
    """The highest ``Version:`` of ``apt-cache showsrc`` output (one stanza per suite)."""
    versions = re.findall(r"^Version:\s*(\S+)\s*$", text, flags=re.MULTILINE)
    if not versions:
        return None
    best = versions[0]
    for version in versions[1:]:
        newer = subprocess.run(["dpkg", "--compare-versions", version, "gt", best], check=False)
        if newer.returncode == 0:
            best = version
    return best


def upstream_version(debian_version: str) -> str:
    """``1.20.2+really1.20.2-1`` -> ``1.20.2``: the version after any ``really`` and before the revision."""
    upstream = debian_version.split(":", 1)[-1].rsplit("-", 1)[0]
    upstream = upstream.split("really", 1)[-1]
    return re.split(r"[+~]", upstream, maxsplit=1)[0]


def _run(args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"{' '.join(args[:3])} ... failed ({proc.returncode}):\n{tail}")
    return proc.stdout


def _source_version(update: bool) -> str | None:
    for part in ("parts", "lists/partial", "cache/archives/partial"):
        (SRC / part).mkdir(parents=True, exist_ok=True)
    (SRC / "parts" / "src.sources").write_text(_SOURCES)
    if update:
        _run(["apt-get", *_apt_options(), "update", "-qq"])
    proc = subprocess.run(
        ["apt-cache", *_apt_options(), "showsrc", "kubernetes"], capture_output=True, text=True, check=False
    )
    return parse_showsrc_version(proc.stdout) if proc.returncode == 0 else None


def cached_binaries(names: tuple[str, ...] = BINARIES) -> Path | None:
    """A cache directory holding all of ``names``, preferring the current source version."""
    version = _source_version(update=False) if (SRC / "lists").is_dir() else None
    if version is not None:
        wanted = CACHE / f"k8s-{version}"
        if all((wanted / name).is_file() for name in names):
            return wanted
    candidates = sorted(p for p in CACHE.glob("k8s-[0-9]*") if all((p / name).is_file() for name in names))
    return candidates[-1] if candidates else None


def missing_binaries(directory: Path, names: tuple[str, ...] = BINARIES) -> tuple[str, ...]:
    """Which of ``names`` a cache directory does not hold yet (a partial cache is completed, not rebuilt)."""
    return tuple(name for name in names if not (directory / name).is_file())


def build(log=print, names: tuple[str, ...] = BINARIES) -> Path:  # type: ignore[no-untyped-def]
    """Build (or find cached) the binaries ``names``; the directory holding them."""
    from tests.testbed.system import apt_install

    apt_install(PACKAGES)
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "k8s-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = cached_binaries(names)
        if found is not None:
            return found
        version = _source_version(update=True)
        if version is None:
            raise RuntimeError("apt-cache showsrc kubernetes found no source package (deb-src lists)")
        out = CACHE / f"k8s-{version}"
        todo = missing_binaries(out, names)
        work = SRC / "build"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        log(f"downloading the kubernetes {version} source package")
        _run(["apt-get", *_apt_options(), "source", "--download-only", "-qq", f"kubernetes={version}"], cwd=work)
        origs = sorted(work.glob("kubernetes_*.orig.tar.*"))
        if not origs:
            raise RuntimeError(f"no kubernetes_*.orig.tar.* in {work}")
        _run(["tar", "xf", str(origs[0])], cwd=work)
        trees = [p for p in work.iterdir() if p.is_dir() and p.name.startswith("kubernetes")]
        if len(trees) != 1:
            raise RuntimeError(f"expected one source tree in {work}, found {trees}")
        tree = trees[0]
        gopath = tree / ".go"
        (gopath / "src" / "k8s.io").mkdir(parents=True, exist_ok=True)
        link = gopath / "src" / "k8s.io" / "kubernetes"
        if not link.exists():
            link.symlink_to("../../..")
        home = SRC / "home"
        home.mkdir(exist_ok=True)
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "GOPATH": str(gopath),
            "CGO_ENABLED": "0",
            "GOPROXY": "off",
            "HOME": str(home),
            "LANG": "C.UTF-8",
        }
        # the build scripts export GOCACHE=_output/local/go/cache: point it at a cache that outlives the tree
        (tree / "_output" / "local" / "go").mkdir(parents=True, exist_ok=True)
        GOCACHE.mkdir(exist_ok=True)
        (tree / "_output" / "local" / "go" / "cache").symlink_to(GOCACHE)
        log(f"building {' '.join(todo)} {version} (several minutes)")
        _run(
            [
                "make",
                "WHAT=" + " ".join(f"cmd/{name}" for name in todo),
                f"KUBE_GIT_VERSION=v{upstream_version(version)}",
            ],
            cwd=tree,
            env=env,
        )
        built = list(tree.glob(f"_output/**/bin/{todo[0]}"))
        if not built:
            raise RuntimeError(f"make finished but no _output/.../bin/{todo[0]}")
        out.mkdir(exist_ok=True)
        for name in todo:  # one file at a time, each complete before its name appears
            shutil.copy2(built[0].parent / name, out / f".{name}.partial")
            (out / f".{name}.partial").rename(out / name)
        shutil.rmtree(work, ignore_errors=True)
        if not missing_binaries(out):
            shutil.rmtree(GOCACHE, ignore_errors=True)
        return out


if __name__ == "__main__":
    print(build(log=lambda msg: print(msg, file=sys.stderr, flush=True)))
