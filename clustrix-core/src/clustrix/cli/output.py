"""How every ``clustrix`` command prints: text for people, or ``--json`` for programs."""

from __future__ import annotations

import json
from typing import Any


def emit(data: Any, as_json: bool, text: str) -> None:
    """Print ``data`` as indented JSON with ``as_json``, else ``text``."""
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(text)
