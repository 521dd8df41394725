"""Entry point ``kubernetes``: registers the Kubernetes scheduler and its configuration keys."""

from __future__ import annotations

from collections.abc import Callable

from clustrix.config.keys import ConfigKey
from clustrix.plugin.hookspecs import hookimpl
from clustrix_k8s.options import DECLARED_KEYS

NAME = "kubernetes"


@hookimpl
def clustrix_config_keys() -> dict[str, ConfigKey]:
    # each key with its type, default and meaning: core checks values against the type
    return dict(DECLARED_KEYS)


@hookimpl
def clustrix_register_schedulers(register: Callable[[str, object], None]) -> None:
    from clustrix_k8s.scheduler import KubernetesScheduler

    register(NAME, KubernetesScheduler())
