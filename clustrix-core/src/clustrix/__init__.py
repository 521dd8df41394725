"""clustrix: put ``@cluster(...)`` on a function and run it on a cluster, or on local cores.

>>> from clustrix import cluster
>>> @cluster(cores=2)
... def square(x):
...     return x * x
>>> square.map(range(4))
[0, 1, 4, 9]

These are the user API. A plugin imports the contract from :mod:`clustrix.plugin.types`
(``JobSpec``, ``JobHandle``, ``JobStatus``, ``JobState``, ``Outcome``, ``Scheduler``) and
:mod:`clustrix.plugin.hookspecs` (``hookimpl``). ``execute_loop_parallel`` stays here: the
docs (docs/local.md, docs/migration.md) promise it to users of the original clustrix.

Names are imported lazily: ``python -m clustrix.remote.runner`` on a compute node then imports
only the runner (standard library and cloudpickle), not the whole client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "configure": "clustrix.config.settings",
    "get_config": "clustrix.config.settings",
    "reset_config": "clustrix.config.settings",
    "ClusterFunction": "clustrix.api.decorator",
    "Executor": "clustrix.api.executor",
    "cluster": "clustrix.api.decorator",
    "ClustrixError": "clustrix.errors",
    "ConfigurationError": "clustrix.errors",
    "DependencyError": "clustrix.errors",
    "JobCancelledError": "clustrix.errors",
    "JobError": "clustrix.errors",
    "JobLostError": "clustrix.errors",
    "JobOutOfMemoryError": "clustrix.errors",
    "JobTimeoutError": "clustrix.errors",
    "RemoteTraceback": "clustrix.errors",
    "SchedulerNotFoundError": "clustrix.errors",
    "ClusterFuture": "clustrix.api.futures",
    "Job": "clustrix.api.job",
    "execute_loop_parallel": "clustrix.local.backend",
    "Resources": "clustrix.config.resources",
}

__all__ = [
    "ClusterFunction",
    "ClusterFuture",
    "ClustrixError",
    "ConfigurationError",
    "DependencyError",
    "Executor",
    "Job",
    "JobCancelledError",
    "JobError",
    "JobLostError",
    "JobOutOfMemoryError",
    "JobTimeoutError",
    "RemoteTraceback",
    "Resources",
    "SchedulerNotFoundError",
    "cluster",
    "configure",
    "execute_loop_parallel",
    "get_config",
    "reset_config",
]

if TYPE_CHECKING:
    from clustrix.api.decorator import ClusterFunction, cluster
    from clustrix.api.executor import Executor
    from clustrix.api.futures import ClusterFuture
    from clustrix.api.job import Job
    from clustrix.config.resources import Resources
    from clustrix.config.settings import configure, get_config, reset_config
    from clustrix.errors import (
        ClustrixError,
        ConfigurationError,
        DependencyError,
        JobCancelledError,
        JobError,
        JobLostError,
        JobOutOfMemoryError,
        JobTimeoutError,
        RemoteTraceback,
        SchedulerNotFoundError,
    )
    from clustrix.local.backend import execute_loop_parallel


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'clustrix' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
