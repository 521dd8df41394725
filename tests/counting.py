"""A slow counter with a ``checkpoint()`` method, for the tests of checkpoint and resume."""

from __future__ import annotations

import time
from typing import Any


def counter_with_checkpoint(step_seconds: float) -> Any:
    """A callable counting to ``n`` one step every ``step_seconds``; ``checkpoint()`` resumes from the step reached.

    The class is made inside this function, so cloudpickle ships it by value: a job can run
    it without importing the tests. It returns ``{"counted": n, "resumed_at": first step of this run}``.
    """

    class Count:
        reached = 0

        def __call__(self, n: int, start: int = 0) -> dict[str, int]:
            for i in range(start, n):
                time.sleep(step_seconds)
                self.reached = i + 1
            return {"counted": self.reached, "resumed_at": start}

        def checkpoint(self, n: int, start: int = 0) -> tuple[Any, tuple[int], dict[str, int]]:
            return self, (n,), {"start": self.reached}

    return Count()
