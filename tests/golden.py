"""Golden-file checks shared by the scheduler tests: rendered text against a file checked in beside them.

Set ``CLUSTRIX_UPDATE_GOLDEN=1`` to rewrite the files after an intended change (then read the diff).
"""

from __future__ import annotations

import os
from pathlib import Path


def check_golden(directory: Path, name: str, text: str) -> None:
    """``text`` is exactly ``directory/name`` (written instead when ``CLUSTRIX_UPDATE_GOLDEN=1``)."""
    path = directory / name
    if os.environ.get("CLUSTRIX_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with CLUSTRIX_UPDATE_GOLDEN=1 to write it"
    assert text == path.read_text()
