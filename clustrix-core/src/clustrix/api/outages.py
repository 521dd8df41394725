"""Hosts that wait for the user: a login that expired while jobs run (two-factor sites).

A poll or fetch that fails with :class:`~clustrix.errors.LoginNeededError` never gives a job
up, however long it takes: the user is told once per outage what to do ("connection to HOST
lost: ..."), the poller keeps asking at its usual pace, and says so when the host answers again.
Any other failure is logged on each round as before and counts towards the poller's limit.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from clustrix.errors import LoginNeededError
from clustrix.log import get_logger

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig

log = get_logger("clustrix.poller")


def lost_message(host: str, exc: LoginNeededError) -> str:
    return f"connection to {host} lost: {exc.remedy(host)}; the jobs keep waiting and nothing is lost"


class Outages:
    """Which hosts are waiting for a login, so the user hears of each outage once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lost: set[str] = set()

    def failed(self, config: ClusterConfig, event: str, exc: Exception, **fields: Any) -> bool:
        """Report a failed poll or fetch; True when it waits for a login (it then never counts against the job)."""
        if not isinstance(exc, LoginNeededError):
            log.warning(event, error=repr(exc), **fields)
            return False
        host = str(config.get("cluster_host") or "localhost")
        with self._lock:
            first = host not in self._lost
            self._lost.add(host)
        if first:
            log.warning("clustrix.connection_lost", host=host, message=lost_message(host, exc))
        return True

    def answered(self, config: ClusterConfig) -> None:
        """A poll reached the host: an outage of it is over."""
        host = str(config.get("cluster_host") or "localhost")
        with self._lock:
            if host not in self._lost:
                return
            self._lost.discard(host)
        log.warning("clustrix.connection_back", host=host)
