"""clustrix: put ``@cluster(...)`` on a function and run it on a cluster, or on local cores.

>>> from clustrix import cluster
>>> @cluster(cores=2)
... def square(x):
...     return x * x
>>> square.map(range(4))
[0, 1, 4, 9]
"""

from clustrix.config import configure, get_config, reset_config
from clustrix.decorator import ClusterFunction, Executor, cluster
from clustrix.errors import (
    ClustrixError,
    ConfigurationError,
    JobCancelledError,
    JobError,
    JobLostError,
    JobOutOfMemoryError,
    JobTimeoutError,
    RemoteTraceback,
    SchedulerNotFoundError,
)
from clustrix.futures import ClusterFuture
from clustrix.hookspecs import hookimpl
from clustrix.job import Job
from clustrix.jobs import JobHandle, JobSpec, JobState, JobStatus, Outcome
from clustrix.local import execute_loop_parallel
from clustrix.resources import Resources

__version__ = "0.1.0"

__all__ = [
    "ClusterFunction",
    "ClusterFuture",
    "ClustrixError",
    "ConfigurationError",
    "Executor",
    "Job",
    "JobCancelledError",
    "JobError",
    "JobHandle",
    "JobLostError",
    "JobOutOfMemoryError",
    "JobSpec",
    "JobState",
    "JobStatus",
    "JobTimeoutError",
    "Outcome",
    "RemoteTraceback",
    "Resources",
    "SchedulerNotFoundError",
    "cluster",
    "configure",
    "execute_loop_parallel",
    "get_config",
    "hookimpl",
    "reset_config",
]
