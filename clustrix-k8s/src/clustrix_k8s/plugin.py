"""Entry point ``kubernetes``: registers the Kubernetes scheduler and declares its configuration keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clustrix.hookspecs import hookimpl
from clustrix_k8s.options import CONFIG_KEYS

NAME = "kubernetes"


@hookimpl
def clustrix_config_keys() -> dict[str, Any]:
    return dict(CONFIG_KEYS)


@hookimpl
def clustrix_register_schedulers(register: Callable[[str, object], None]) -> None:
    from clustrix_k8s.scheduler import KubernetesScheduler

    register(NAME, KubernetesScheduler())
