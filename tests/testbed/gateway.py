"""A TCP gateway from this machine's loopback into a network namespace: ``python3 gateway.py NETNS_PATH PORT``.

It listens on ``127.0.0.1:PORT`` in the namespace it starts in, then enters the
namespace ``NETNS_PATH`` (``setns``, before any other thread exists, so every thread
it starts lives there) and forwards each connection to ``127.0.0.1:PORT`` inside. The
daemon behind it sees its clients on its own loopback. One process, a thread per
direction of each connection: no fork or exec per connection (a ``socat ... fork
EXEC:nsenter ...`` gateway added about 65 ms to every ``qstat``).

Standard library only: the testbeds start it with the system's ``python3`` as a daemon
that outlives the test session (see :class:`tests.testbed.netns.Gateway`).
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys
import threading
import time
from collections.abc import Callable

CLONE_NEWNET = 0x40000000


def enter(netns_path: str) -> None:
    """Move this (still single-threaded) process into the network namespace at ``netns_path``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(netns_path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({netns_path}): {os.strerror(errno)}")
    finally:
        os.close(fd)


def pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy ``source`` to ``sink`` until end of file, then pass the end on (half-close)."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def serve(client: socket.socket, port: int, copy: Callable[[socket.socket, socket.socket], None] = pump) -> None:
    """Forward ``client`` to ``127.0.0.1:port``, ``copy`` carrying each direction (delay.py delays it)."""
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    # no Nagle: a forwarded small write must not wait for the peer's delayed ACK (40 ms a message)
    for sock in (client, upstream):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=copy, args=(upstream, client), daemon=True)
    back.start()
    copy(client, upstream)
    back.join()
    client.close()
    upstream.close()


def main(argv: list[str]) -> int:
    netns_path, port = argv[0], int(argv[1])
    listener = socket.create_server(("127.0.0.1", port), backlog=128)
    enter(netns_path)
    while True:
        try:
            client, _ = listener.accept()
        except OSError:  # e.g. out of file descriptors for a moment: keep serving
            time.sleep(0.1)
            continue
        threading.Thread(target=serve, args=(client, port), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
