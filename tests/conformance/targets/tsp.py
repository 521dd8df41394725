"""task-spooler in the conformance suite: the reference plugin (tests/plugins/clustrix-tsp), one private queue each."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.conformance.target import SSH_TRANSPORTS, Target, transport_options
from tests.testbed import tsp as tsp_testbed
from tests.testbed.sshd import SSHServer
from tests.testbed.system import unavailable

SCHEDULER = "tsp"
TRANSPORTS = ("local", *SSH_TRANSPORTS)


@pytest.fixture(scope="session")
def conformance_tsp(
    tmp_path_factory: pytest.TempPathFactory, conformance_sshd: SSHServer
) -> Iterator[Callable[[str], Target]]:
    try:
        import clustrix_tsp  # noqa: F401 - the plugin under test must be installed

        queues = {"local": tsp_testbed.start(), "ssh": tsp_testbed.start(conformance_sshd.user)}  # one per user
    except Exception as exc:
        unavailable(f"task-spooler testbed: {type(exc).__name__}: {exc}")
        raise
    work = str(tmp_path_factory.mktemp("tsp-jobs"))

    def make(transport: str) -> Target:
        queue = queues["local" if transport == "local" else "ssh"]
        options = transport_options(transport, "tsp", work, conformance_sshd)
        return Target(
            scheduler="tsp",
            transport=transport,
            options={**options, "cluster_type": "tsp", "tsp_socket": queue.socket, "job_poll_interval": 0.2},
            short_time="00:00:03",
            restart_controller=queue.restart,
            remote_user=queue.user,
            can_queue=True,
            native_state=lambda native_id: queue.run("-s", native_id).stdout,
            spool_dirs=(queue.directory,),  # the queue's own directory: its output files
        )

    yield make
    for queue in queues.values():
        queue.cleanup()
