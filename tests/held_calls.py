"""Calls of a map that return, raise, or wait until the test lets them go: a running map in a known state.

Jobs cannot import the ``tests`` package: a test that maps :func:`finish_raise_or_wait` ships this
module by value (:func:`held`). The release folder is world-readable, since jobs may run as
another user (over SSH, in the OpenPBS namespace).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def finish_raise_or_wait(release_dir: str, x: int, raising: int, first_held: int) -> int:
    """Call ``raising`` raises ``ValueError``; calls from ``first_held`` on wait for ``go`` or ``go-<x>``.

    A held call also ends when the release folder is gone (the test is over).
    """
    if x == raising:
        raise ValueError(f"call {x} raises")
    go, mine = os.path.join(release_dir, "go"), os.path.join(release_dir, f"go-{x}")
    while x >= first_held and os.path.isdir(release_dir) and not (os.path.exists(go) or os.path.exists(mine)):
        time.sleep(0.05)
    return x


def arguments(release: Path, n_calls: int, *, raising: int, first_held: int) -> list[list[object]]:
    """The iterables to map :func:`finish_raise_or_wait` over ``range(n_calls)`` with."""
    return [[str(release)] * n_calls, list(range(n_calls)), [raising] * n_calls, [first_held] * n_calls]


def release(folder: Path, *calls: int) -> None:
    """Let ``calls`` go (every held call when none are named)."""
    for name in [f"go-{x}" for x in calls] or ["go"]:
        (folder / name).touch()


@contextlib.contextmanager
def held() -> Iterator[Path]:
    """A release folder; every held call is let go at the end, also when the test fails."""
    import cloudpickle

    folder = Path(tempfile.mkdtemp(prefix="clustrix-release-"))
    folder.chmod(0o755)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield folder
    finally:
        release(folder)
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        shutil.rmtree(folder, ignore_errors=True)
