"""Driving the ssh scheduler object directly: submit, poll until final, fetch."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from clustrix.config.settings import ClusterConfig, resolve_config
from clustrix.plugin.manager import RegisteredScheduler, get_scheduler
from clustrix.plugin.types import JobHandle, JobSpec, JobStatus, Outcome

#: The remote venv holds clustrix-core's closure only: this machine's full dev venv pins
#: packages (e.g. soupsieve 4.1.2) that need Python >= 3.11.5, and the sshd user's
#: python3 is Debian's 3.11.2. Replicating everything is tested to fail with that message.
REPLICATE = ["clustrix-core"]


def scheduler() -> RegisteredScheduler:
    return get_scheduler("ssh")


def config_for(server_config: dict[str, Any], **extra: Any) -> ClusterConfig:
    return resolve_config(overrides={"replicate_distributions": REPLICATE, **server_config, **extra})


def submit(config: ClusterConfig, func: Callable[..., Any], *calls: tuple[Any, ...]) -> JobHandle:
    spec = JobSpec(
        name=getattr(func, "__name__", "f"), func=func, arguments=[(c, {}) for c in calls or [()]], config=config
    )
    return scheduler().submit(spec, wake=lambda: None)


def wait(config: ClusterConfig, handle: JobHandle, timeout: float = 60.0) -> JobStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = scheduler().poll([handle], config).get(handle.job_id)
        if status is not None and status.state.final:
            return status
        time.sleep(0.1)
    raise TimeoutError(f"job {handle.job_id} not final after {timeout} s")


def run(config: ClusterConfig, func: Callable[..., Any], *calls: tuple[Any, ...]) -> list[Outcome | None]:
    handle = submit(config, func, *calls)
    wait(config, handle)
    return list(scheduler().fetch(handle, config))
