"""Ctrl-C held where a ``KeyboardInterrupt`` would leave things half done, and raised where it is safe.

Used by :mod:`clustrix.api.futures`: while a local job is being submitted (its first calls may
already run, and only its job can stop them), and while a future is waited for (a
``KeyboardInterrupt`` inside ``threading.Condition.wait`` can leave the future's lock released).
"""

from __future__ import annotations

import concurrent.futures
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, TypeVar

_T = TypeVar("_T")


class HeldInterrupts:
    """Ctrl-C inside is held and raised as ``KeyboardInterrupt`` on leaving, whatever the body was doing.

    Only in the main thread (where Python runs signal handlers) and while SIGINT has
    Python's default handler (``active``); a program with a handler of its own keeps it
    unchanged. Inside another hold, this one shares its ``caught`` and leaves the raising to it.
    """

    def __init__(self) -> None:
        self._previous: Any = None
        self._outer: HeldInterrupts | None = None
        self._caught = False

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self._caught = True

    @property
    def active(self) -> bool:
        return self._previous is not None or self._outer is not None

    @property
    def caught(self) -> bool:
        return self._outer.caught if self._outer is not None else self._caught

    def __enter__(self) -> HeldInterrupts:
        if threading.current_thread() is threading.main_thread():
            handler = signal.getsignal(signal.SIGINT)
            if handler is signal.default_int_handler:
                self._previous = signal.signal(signal.SIGINT, self._note)
            elif isinstance(getattr(handler, "__self__", None), HeldInterrupts):
                self._outer = getattr(handler, "__self__", None)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            if self._caught and exc_type is not KeyboardInterrupt:
                raise KeyboardInterrupt


#: While a future is waited for, a held Ctrl-C is looked at this often.
_INTERRUPT_CHECK_SECONDS = 0.05


def wait_interruptibly(get: Callable[[float | None], _T], timeout: float | None, done: Callable[[], bool]) -> _T:
    """``get(timeout)`` (a future's ``result`` or ``exception``), with Ctrl-C raised between waits.

    A ``KeyboardInterrupt`` raised inside ``threading.Condition.wait`` just after it released
    the future's lock leaves that lock released, and the ``with`` around the wait then
    raises ``RuntimeError: cannot release un-acquired lock`` instead: a Ctrl-C the caller
    never sees as one. So Ctrl-C is held while waiting, and the wait is cut into short
    waits, between which a held Ctrl-C is raised. ``done`` tells a short wait that ran out from
    an outcome that is itself a ``TimeoutError`` (``JobTimeoutError``, or a call's own): the
    builtin ``TimeoutError`` is ``concurrent.futures.TimeoutError``.
    """
    if done():  # no wait
        return get(timeout)
    with HeldInterrupts() as held:
        if not held.active:
            return get(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not held.caught:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return get(_INTERRUPT_CHECK_SECONDS if left is None else min(left, _INTERRUPT_CHECK_SECONDS))
            except concurrent.futures.TimeoutError:
                if done():  # finished: its outcome (a TimeoutError of its own, perhaps), raised or returned
                    return get(0)
                if left is not None and left <= _INTERRUPT_CHECK_SECONDS:
                    raise
        raise KeyboardInterrupt
