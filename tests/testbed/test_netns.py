"""The testbeds' network rule: no server on the machine's own addresses, daemons inside their namespaces.

SLURM's and SGE's daemons bind ``0.0.0.0``; the testbeds run them in network namespaces
of their own and open gateways on ``127.0.0.1`` (:mod:`tests.testbed.netns`). These
tests read the listening sockets with ``ss`` on both sides and drive a gateway end to end.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence

import pytest

from tests.testbed import netns, sge, slurm
from tests.testbed.system import apt_install, free_port, start_or_unavailable, unavailable, wait_for

#: A server that answers one line with the address of the peer it saw and the line.
PEER_ECHO = """
import socket, sys
server = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
conn, (peer, _) = server.accept()
line = conn.makefile().readline()
conn.sendall(f"{peer} {line}".encode())
conn.close()
"""


def listeners(prefix: Sequence[str] = ()) -> set[tuple[str, int]]:
    """``(address, port)`` of every listening TCP socket (of a namespace, with ``prefix`` = its nsenter)."""
    out = subprocess.run([*prefix, "ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in out.splitlines():
        local = line.split()[3]
        address, _, port = local.rpartition(":")
        found.add((address.strip("[]"), int(port)))
    return found


def _root() -> None:
    if os.geteuid() != 0:
        unavailable("network namespaces need root")
    apt_install(["iproute2"])


def test_a_gateway_carries_connections_into_its_namespace_as_loopback_clients_and_down_removes_both() -> None:
    _root()
    namespace = netns.Namespace("clustrix-gwtest", address="10.254.251.1/24")
    port = free_port()
    namespace.up()
    server = subprocess.Popen(
        namespace.enter([sys.executable, "-c", PEER_ECHO, str(port)]), stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline() == "ready\n"
        gateway = namespace.gateway(port)
        gateway.start()
        assert ("127.0.0.1", port) in listeners()
        assert ("0.0.0.0", port) not in listeners()
        assert ("0.0.0.0", port) in listeners(namespace.enter([]))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"ping\n")
            reply = client.makefile().readline()
        assert reply == "127.0.0.1 ping\n"
    finally:
        server.kill()
        server.wait()
        namespace.down()
    assert not namespace.exists()
    assert not namespace.run_dir.exists()
    wait_for(lambda: ("127.0.0.1", port) not in listeners(), timeout=10, what="the gateway gone")


def _only_loopback_outside(ports: Sequence[int]) -> None:
    outside = {(address, port) for address, port in listeners() if port in ports}
    assert all(address == "127.0.0.1" for address, _ in outside), outside


@pytest.mark.testbed_slurm
def test_slurm_daemons_listen_only_inside_their_namespace_and_clients_outside_reach_them() -> None:
    _root()
    bed = start_or_unavailable("SLURM testbed", slurm.start)
    _only_loopback_outside((6817, 6818, 6819))
    inside = listeners(slurm.NAMESPACE.enter([]))
    assert {("0.0.0.0", 6817), ("0.0.0.0", 6818), ("0.0.0.0", 6819)} <= inside
    for name in slurm.IN_NAMESPACE:
        assert slurm.NAMESPACE.holds(slurm.pid_from_file(slurm.PID_FILES[name])), name
    # the host-side client (sinfo) reaches slurmctld through the gateway
    assert slurm.node_state(bed.node).rstrip("*~#") in {"idle", "mixed", "allocated", "completing"}


@pytest.mark.testbed_sge
def test_sge_daemons_listen_only_inside_their_namespace_and_clients_outside_reach_them() -> None:
    _root()
    bed = start_or_unavailable("SGE testbed", sge.start)
    _only_loopback_outside((6444, 6445))
    assert {("0.0.0.0", 6444), ("0.0.0.0", 6445)} <= listeners(sge.NAMESPACE.enter([]))
    assert sge.NAMESPACE.holds(sge.pid_from_file(sge.QMASTER_PID))
    assert sge.NAMESPACE.holds(sge.execd_pid())
    assert sge.queue_instances_usable(bed.host)
