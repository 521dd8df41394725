"""Container images for the Kubernetes testbed, built here from Debian packages (no image hub needed).

One root filesystem is made with ``debootstrap --variant=minbase`` (Debian's ``python3``,
``pip``, ``venv`` and ``python-is-python3``, so ``python`` is on ``PATH`` as in the
``python:3.11-slim`` image); every image is that layer plus at most one small layer of its
own, written as a ``docker-archive`` tar (``manifest.json``, config, layer tars) by a few
lines of Python and pushed with ``skopeo`` into the testbed's registry
(:mod:`tests.testbed.registry`).

Everything is cached by content under ``/var/cache/clustrix-testbed/k8s-images/``: the
base layer by its recipe (suite, packages, :data:`RECIPE`), each image by the hash of its
layers and config, so a warm start pushes nothing and a changed recipe builds again.

The images (:func:`image_specs`):

- ``python:<3.x>-slim``: like the official one, no ``cloudpickle`` (the pip step of the
  documented default installs it; its ``/etc/pip.conf`` names the testbed's package index);
- ``clustrix-testbed/python:<3.x>``: the same plus :data:`WHEELS` (``cloudpickle``; a prepared image);
- ``clustrix-testbed/nonroot:<3.x>``: the prepared image run as user 1000 with ``HOME=/``
  (not writable): for read-only and non-root pods;
- ``clustrix-testbed/entrypoint:<3.x>``: the prepared image with an entrypoint that must
  not swallow the pod's command;
- ``clustrix-testbed/pause:1``: the pod sandbox (``sleep infinity``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from tests.testbed.k8s_build import CACHE

IMAGES = CACHE / "k8s-images"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-pip", "python3-venv", "python-is-python3", "ca-certificates")
#: bump when the way the base layer is made changes (the cache key includes it)
RECIPE = "1"
#: pure-Python distributions of the prepared images and of the pip step's package index
WHEELS = {"cloudpickle": "3.1.3", "sortedcontainers": "2.4.0"}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _run(argv: list[str], **kwargs: Any) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")


def base_key() -> str:
    return _sha256(json.dumps([SUITE, MIRROR, PACKAGES, RECIPE]).encode())[:16]


def base_layer(log: Callable[[str], None] = print) -> Path:
    """The Debian root filesystem as an uncompressed layer tar (built once per recipe)."""
    layer = IMAGES / f"base-{base_key()}.tar"
    if layer.is_file():
        return layer
    from tests.testbed.system import apt_install

    apt_install(["debootstrap", "skopeo"])
    IMAGES.mkdir(parents=True, exist_ok=True)
    root = IMAGES / f"rootfs-{base_key()}"
    shutil.rmtree(root, ignore_errors=True)
    started = time.monotonic()
    log(f"debootstrap {SUITE} with {', '.join(PACKAGES)} (about a minute)")
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR])
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info"):
        for child in (root / junk).glob("*"):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            elif child.name not in {"partial", "lock"}:
                child.unlink()
    partial = layer.with_suffix(".partial")
    _run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(partial), "."])
    partial.rename(layer)
    shutil.rmtree(root)
    log(f"base layer {layer} ({layer.stat().st_size >> 20} MiB) in {time.monotonic() - started:.0f} s")
    return layer


def python_version(layer: Path) -> str:
    """``3.11``: the ``python3`` of the base layer (its ``usr/bin/python3`` link target)."""
    with tarfile.open(layer) as tar:
        member = tar.getmember("./usr/bin/python3")
        return member.linkname.removeprefix("python")


def wheel(name: str, version: str | None = None) -> Path:
    """The wheel of ``name`` (:data:`WHEELS`' version unless given), downloaded once with pip."""
    wheels = IMAGES / "wheels"
    version = version or WHEELS[name]
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    if not any(wheels.glob(pattern)):
        wheels.mkdir(parents=True, exist_ok=True)
        _run(["python3", "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.11",
              "-d", str(wheels), f"{name}=={version}"])  # fmt: skip
    found = sorted(wheels.glob(pattern))
    if not found:
        raise RuntimeError(f"pip download {name}=={version} left no {pattern} in {wheels}")
    return found[0]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _cached_wheel(wheels: Path, name: str, version: str) -> Path | None:
    for path in sorted(wheels.glob("*.whl")):
        wheel_name, wheel_version = path.name.split("-")[:2]
        if _normal(wheel_name) == _normal(name) and wheel_version == version:
            return path
    return None


def wheels_for(requirements: list[str]) -> list[Path]:
    """The wheels of pinned ``name==version`` lines for the node's Python: what is missing, in one ``pip download``.

    Cached by name and version under :data:`IMAGES` ``/wheels`` (a warm start downloads nothing).
    """
    wheels = IMAGES / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pins = [line.split("==", 1) for line in requirements]
    missing = [f"{name}=={version}" for name, version in pins if _cached_wheel(wheels, name, version) is None]
    if missing:
        _run(["python3", "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
              "--python-version", "3.11", "-d", str(wheels), *missing])  # fmt: skip
    found = [(f"{name}=={version}", _cached_wheel(wheels, name, version)) for name, version in pins]
    lost = [line for line, path in found if path is None]
    if lost:
        raise RuntimeError(f"pip download left no wheel for {', '.join(lost)} in {wheels}")
    return [path for _, path in found if path is not None]


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def files_layer(files: dict[str, tuple[bytes, int]]) -> bytes:
    """An uncompressed layer tar holding ``files`` (path -> (content, mode)), parents implied."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (data, mode) in sorted(files.items()):
            _add(tar, name, data, mode)
    return out.getvalue()


def wheel_files(wheel: Path, site: str) -> dict[str, tuple[bytes, int]]:
    """A pure-Python wheel unpacked into ``site`` (what ``pip install`` would place there)."""
    with zipfile.ZipFile(wheel) as archive:
        return {f"{site}/{name}": (archive.read(name), 0o644) for name in archive.namelist() if not name.endswith("/")}


@attrs.frozen
class ImageSpec:
    """An image: the base layer, optional extra layer, and its config (user, entrypoint, command, env)."""

    name: str  # repository path in the registry, e.g. ``library/python``
    tag: str
    extra: bytes = b""
    config: dict[str, Any] = attrs.field(factory=dict)

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}"


def image_specs(version: str, index_url: str) -> list[ImageSpec]:
    site = f"usr/local/lib/python{version}/dist-packages"
    host = index_url.split("//", 1)[1].split(":", 1)[0]
    pip_conf = f"[global]\nindex-url = {index_url}\ntrusted-host = {host}\ntimeout = 5\nretries = 0\n".encode()
    prepared = {path: entry for name in WHEELS for path, entry in wheel_files(wheel(name), site).items()}
    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"]
    entry = b'#!/bin/sh\n# an image entrypoint that runs the command it is given, as most do\nexec "$@"\n'
    return [
        ImageSpec("library/python", f"{version}-slim", files_layer({"etc/pip.conf": (pip_conf, 0o644)}),
                  {"Env": env, "Cmd": ["python3"]}),
        ImageSpec("clustrix-testbed/python", version, files_layer(prepared), {"Env": env, "Cmd": ["python3"]}),
        ImageSpec("clustrix-testbed/nonroot", version, files_layer(prepared),
                  {"Env": [*env, "HOME=/"], "User": "1000:1000", "Cmd": ["python3"]}),
        ImageSpec("clustrix-testbed/entrypoint", version,
                  files_layer({**prepared, "usr/local/bin/entrypoint.sh": (entry, 0o755)}),
                  {"Env": env, "Entrypoint": ["/usr/local/bin/entrypoint.sh"], "Cmd": ["python3"]}),
        ImageSpec("clustrix-testbed/pause", "1", b"", {"Env": env, "Cmd": ["/bin/sleep", "infinity"]}),
    ]  # fmt: skip


def docker_archive(spec: ImageSpec, base: Path, base_digest: str) -> Path:
    """The image as a ``docker-archive`` tar, cached by the hash of its layers and config."""
    layers = [("base.tar", base, base_digest)]
    if spec.extra:
        layers.append(("extra.tar", None, _sha256(spec.extra)))  # type: ignore[arg-type]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": spec.config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest}" for _, _, digest in layers]},
        "history": [{"created_by": "tests/testbed/images.py"} for _ in layers],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    key = _sha256(config_bytes)[:16]
    out = IMAGES / f"{spec.name.replace('/', '_')}-{spec.tag}-{key}.tar"
    if out.is_file():
        return out
    partial = out.with_suffix(".partial")
    with tarfile.open(partial, "w") as tar:
        for name, path, _ in layers:
            if path is not None:
                tar.add(path, arcname=name)
            else:
                _add(tar, name, spec.extra)
        _add(tar, "config.json", config_bytes)
        manifest = [{"Config": "config.json", "RepoTags": [spec.reference], "Layers": [n for n, _, _ in layers]}]
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    partial.rename(out)
    return out


def layer_digest(layer: Path) -> str:
    """The layer tar's sha256, remembered next to it."""
    memo = layer.with_suffix(".sha256")
    if memo.is_file():
        return memo.read_text().strip()
    digest = hashlib.sha256()
    with open(layer, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    memo.write_text(digest.hexdigest() + "\n")
    return digest.hexdigest()


def build_images(index_url: str, log: Callable[[str], None] = print) -> tuple[str, dict[str, Path]]:
    """Build what is missing; the Python version and ``{reference: docker-archive path}``."""
    base = base_layer(log)
    version = python_version(base)
    digest = layer_digest(base)
    archives = {spec.reference: docker_archive(spec, base, digest) for spec in image_specs(version, index_url)}
    return version, archives


def push(archive: Path, reference: str, registry: str, enter: Callable[[list[str]], list[str]]) -> None:
    """``skopeo copy`` the archive into the registry at ``registry`` (run inside the testbed's namespace)."""
    marker = archive.with_suffix(".pushed")
    argv = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"docker-archive:{archive}",
            f"docker://{registry}/{reference}"]  # fmt: skip
    _run(enter(argv), env={**os.environ, "HOME": str(IMAGES)})
    marker.touch()


__all__ = ["ImageSpec", "build_images", "push"]
