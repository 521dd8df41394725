"""A TCP proxy on 127.0.0.1 that delays every byte by a fixed time each way: a far link, in user space.

``python3 delay.py LISTEN_PORT TARGET_PORT ONE_WAY_MS`` forwards each connection to
``127.0.0.1:TARGET_PORT`` and holds what passes, in both directions, for ``ONE_WAY_MS``
before sending it on (a delay line: order kept, throughput not limited), so an SSH client
pointed at ``LISTEN_PORT`` sees a round trip of twice that (a laptop on a VPN).

Why not netem: the kernel of the project machine is built without ``CONFIG_NET_SCH_NETEM``
(``tc qdisc add ... netem`` answers "Specified qdisc kind is unknown") and has no modules,
so the delay cannot be put on a testbed namespace's link. This proxy delays application
data only: TCP's own handshake and ACKs are not delayed, which SSH's request/response
round trips do not depend on.

Standard library only; :func:`start` runs it as a child process.
"""

from __future__ import annotations

import collections
import functools
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


def delay_line(source: socket.socket, sink: socket.socket, delay: float) -> None:
    """Copy ``source`` to ``sink``, each chunk sent ``delay`` seconds after it arrived; then half-close."""
    queue: collections.deque[tuple[float, bytes]] = collections.deque()
    ready = threading.Condition()

    def sender() -> None:
        while True:
            with ready:
                while not queue:
                    ready.wait()
                due, data = queue.popleft()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if not data:
                try:
                    sink.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                sink.sendall(data)
            except OSError:
                return

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    while True:
        try:
            data = source.recv(65536)
        except OSError:
            data = b""
        with ready:
            queue.append((time.monotonic() + delay, data))
            ready.notify()
        if not data:
            break
    thread.join()


def main(argv: list[str]) -> int:
    from gateway import serve  # run as a script, its folder is on sys.path: the gateway's forwarding

    listen_port, target_port, one_way_ms = int(argv[0]), int(argv[1]), float(argv[2])
    listener = socket.create_server(("127.0.0.1", listen_port), backlog=128)
    while True:
        client, _ = listener.accept()
        copy = functools.partial(delay_line, delay=one_way_ms / 1000)
        threading.Thread(target=serve, args=(client, target_port, copy), daemon=True).start()


def start(target_port: int, round_trip_ms: float) -> tuple[int, subprocess.Popen[bytes]]:
    """A delay proxy in front of ``127.0.0.1:target_port``: its port, and the process (terminate it)."""
    from tests.testbed.system import free_port, wait_for  # not when run as the proxy itself

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__)), str(port), str(target_port), str(round_trip_ms / 2)],
        stdin=subprocess.DEVNULL,
    )

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    wait_for(listening, timeout=10, what=f"delay proxy on 127.0.0.1:{port}")
    return port, process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
