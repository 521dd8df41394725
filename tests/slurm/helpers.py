"""Shared helpers of the SLURM tests: configuration, a counting transport, polling to the end."""

from __future__ import annotations

import re
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Any

from clustrix.config.settings import ClusterConfig, resolve_config
from clustrix.plugin.transport import LocalTransport
from clustrix.plugin.types import JobHandle, JobStatus

#: The job's Python: it has clustrix-core and cloudpickle installed.
PYTHON = sys.executable


def slurm_config(work_dir: str, **overrides: Any) -> ClusterConfig:
    return resolve_config(
        overrides={
            "cluster_type": "slurm",
            "remote_work_dir": work_dir,
            "python_executable": PYTHON,
            "job_poll_interval": 0.2,
            **overrides,
        }
    )


class CountingTransport(LocalTransport):
    """The real local transport, recording every command run through it (over SSH, one round trip each)."""

    def __init__(self) -> None:
        self.commands: list[str] = []

    def execute(self, argv: Sequence[str], **kwargs: Any) -> tuple[int, bytes, bytes]:  # run() and run_bytes()
        stdin: bytes = kwargs.get("input") or b""
        size, _, rest = stdin.partition(b"\n")
        script = rest[: int(size)].decode(errors="replace") if size.isdigit() else ""  # scripts come on stdin
        self.commands.append(shlex.join(argv) + "\n" + script)
        return super().execute(argv, **kwargs)

    def mentioning(self, program: str) -> int:
        """How many commands so far name ``program`` (e.g. ``sbatch``) as a word."""
        return sum(1 for command in self.commands if re.search(rf"(?<![\w-]){re.escape(program)}(?![\w-])", command))


def poll_until_final(
    scheduler: Any, handle: JobHandle, config: ClusterConfig, *, timeout: float, interval: float = 0.2
) -> tuple[JobStatus, int]:
    """Poll one job until its state is final; return the status and the number of poll rounds."""
    deadline = time.monotonic() + timeout
    rounds = 0
    while True:
        rounds += 1
        status = scheduler.poll([handle], config).get(handle.job_id)
        if status is not None and status.state.final:
            return status, rounds
        if time.monotonic() > deadline:
            raise AssertionError(f"job {handle.native_id} still {status} after {timeout} s")
        time.sleep(interval)


def wait_for_state(
    scheduler: Any, handle: JobHandle, config: ClusterConfig, state: str, *, timeout: float
) -> JobStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = scheduler.poll([handle], config).get(handle.job_id)
        if status is not None and status.state.value == state:
            return status
        time.sleep(0.1)
    raise AssertionError(f"job {handle.native_id} never reached {state}")


class Direct:
    """Calls a scheduler object's hook methods with the facade's names (submit, poll, fetch, ...)."""

    def __init__(self, impl: Any) -> None:
        self.impl = impl

    def submit(self, spec: Any, wake: Any) -> JobHandle:
        return self.impl.clustrix_submit(spec=spec, wake=wake)

    def poll(self, handles: Sequence[JobHandle], config: ClusterConfig) -> Any:
        return self.impl.clustrix_poll(handles=handles, config=config)

    def fetch(self, handle: JobHandle, config: ClusterConfig) -> Any:
        return self.impl.clustrix_fetch(handle=handle, config=config)

    def cancel(self, handle: JobHandle, config: ClusterConfig) -> Any:
        return self.impl.clustrix_cancel(handle=handle, config=config)
