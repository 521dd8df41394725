"""SLURM with ``remote_index="none"``: the venv built from wheels shipped over SSH, the job on a node with no route.

The SLURM testbed's login node is this machine (its sshd sessions run outside the testbed's
network namespace and reach an index), so the key forces the shipped wheels; slurmd runs
inside the namespace ``clustrix-slurm``, so the job itself runs where no index is reachable
(the call asserts it). Issue 20's tests on OpenPBS cover the probe on a login node with no route.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from clustrix import cluster
from clustrix.config.settings import resolve_config
from clustrix.errors import NoWheelError
from clustrix.plugin.manager import transport_for
from clustrix.remote.environment.prepare import forget_prepared, prepare_remote_environment
from tests.no_index import NUMPY, SDIST_ONLY, snapshot_with
from tests.testbed.sshd import SSHServer

pytestmark = pytest.mark.testbed_slurm


@pytest.fixture
def no_index(slurm_cluster: Any, sshd: SSHServer, fresh_plugins: None) -> Iterator[dict[str, Any]]:
    work = f"~/.clustrix/noindex-{uuid.uuid4().hex[:8]}"
    options = sshd.config(cluster_type="slurm", remote_work_dir=work, remote_index="none", job_poll_interval=0.2)
    forget_prepared()
    yield options
    forget_prepared()
    transport = transport_for(resolve_config(overrides=options))
    path = shlex.quote(transport.expand(work))
    transport.run(["sh", "-c", f"chmod -R u+w {path}; rm -rf {path}"])


def test_numpy_and_a_call_with_dependencies_run_from_wheels_shipped_over_ssh(no_index: dict[str, Any]) -> None:
    import hypothesis

    config = resolve_config(overrides=no_index)
    transport = transport_for(config)
    env = prepare_remote_environment(transport, config, snapshot_with(NUMPY))
    assert env.built and any(name.startswith("numpy-2.2.6-cp311") for name in env.shipped_wheels)
    check = transport.run([env.python, "-c", "import numpy; print(numpy.arange(5).sum())"])
    assert check.stdout.strip() == "10"
    forget_prepared()
    again = prepare_remote_environment(transport, config, snapshot_with(NUMPY))
    assert not again.built and again.shipped_bytes == 0

    @cluster(**no_index, replicate_distributions=["hypothesis"])
    def versions() -> tuple[str, str, str]:
        import importlib.metadata as md
        import socket

        try:
            socket.create_connection(("151.101.0.223", 443), timeout=3).close()
            reached = "reached"
        except OSError:
            reached = "no route"
        return md.version("hypothesis"), md.version("sortedcontainers"), reached

    hyp, sorted_containers, reached = versions()
    assert hyp == hypothesis.__version__ and sorted_containers and reached == "no route"


def test_an_sdist_only_distribution_is_refused_by_name(no_index: dict[str, Any]) -> None:
    config = resolve_config(overrides=no_index)
    with pytest.raises(NoWheelError, match=r"docopt==0\.6\.2.*Nothing was submitted"):
        prepare_remote_environment(transport_for(config), config, snapshot_with(SDIST_ONLY))
