"""The Kubernetes testbed's image registries: Debian's ``docker-registry`` (Distribution 2.8).

Two registries share one storage folder, cached across runs
(``/var/cache/clustrix-testbed/k8s-registry``) so the images built by
:mod:`tests.testbed.images` are pushed once per content:

- an open one (pulls need no login), which containerd also uses as its ``docker.io``
  mirror, so ``python:3.11-slim`` resolves to the testbed's own image;
- one that requires a login (``htpasswd``, bcrypt), for image pull secrets.

Both run inside the testbed's network namespace; the kubelet's containerd pulls from them
over the node's address like from any registry.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.testbed.k8s_build import CACHE

STORAGE = CACHE / "k8s-registry"
REGISTRY = "/usr/bin/docker-registry"


def render_config(port: int, storage: Path, htpasswd: Path | None) -> str:
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {storage}",
        "http:",
        f"  addr: 0.0.0.0:{port}",
    ]
    if htpasswd is not None:
        lines += ["auth:", "  htpasswd:", "    realm: clustrix-testbed", f"    path: {htpasswd}"]
    return "\n".join(lines) + "\n"


def write_htpasswd(path: Path, user: str, password: str) -> None:
    """A bcrypt htpasswd file (the only hash Distribution accepts), made with apache2-utils."""
    proc = subprocess.run(
        ["htpasswd", "-niB", user], input=password, capture_output=True, text=True, check=True, timeout=60
    )
    path.write_text(proc.stdout)
    path.chmod(0o600)
