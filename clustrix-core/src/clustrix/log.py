"""structlog as a guest: clustrix wraps stdlib loggers and never configures logging itself.

structlog (and the asyncio it imports) is loaded at the first event that its stdlib
logger would actually emit: with logging at its default level, the debug and info
events of a local map cost nothing, not even the import.
"""

from __future__ import annotations

import logging
from typing import Any

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _ignore(*_args: Any, **_kwargs: Any) -> None:
    return None


class _Logger:
    """A structlog logger over ``logging.getLogger(name)``, built when first needed."""

    def __init__(self, name: str) -> None:
        self._stdlib = logging.getLogger(name)
        self._bound: Any = None

    def __getattr__(self, attr: str) -> Any:
        level = _LEVELS.get(attr)
        if level is not None and not self._stdlib.isEnabledFor(level):
            return _ignore
        if self._bound is None:
            import structlog

            self._bound = structlog.wrap_logger(
                self._stdlib,
                processors=[
                    structlog.stdlib.filter_by_level,
                    structlog.stdlib.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso"),
                    structlog.processors.KeyValueRenderer(key_order=["event"]),
                ],
                wrapper_class=structlog.stdlib.BoundLogger,
            )
        return getattr(self._bound, attr)


def get_logger(name: str) -> Any:
    """A structlog logger over ``logging.getLogger(name)``; events are named ``clustrix.<what>``."""
    return _Logger(name)
