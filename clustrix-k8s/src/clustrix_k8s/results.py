"""Reading the results channel back (pure): result Secrets -> each call's outcome bytes.

The pod side is :mod:`clustrix_k8s.bootstrap`. Per array task, the Secrets are grouped
by attempt (``clustrix.io/attempt``); an attempt counts only when all the Secrets it
announced (``clustrix.io/secrets``) are present, and the newest complete attempt
(``clustrix.io/stamp``) wins, so after ``backoffLimit`` retries the last attempt's outcome
is the one returned. A call's bytes are accepted only if their HMAC-SHA256 under the
job's key matches.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any


def _annotation(item: Mapping[str, Any], name: str) -> str:
    return str(((item.get("metadata") or {}).get("annotations") or {}).get(name, ""))


def outcome_bytes(secrets: Iterable[Mapping[str, Any]], key: bytes) -> dict[int, bytes]:
    """Call index -> outcome bytes, from the JSON items of a Secret list."""
    attempts: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for item in secrets:
        labels = (item.get("metadata") or {}).get("labels") or {}
        attempts.setdefault(
            (str(labels.get("clustrix.io/task", "")), _annotation(item, "clustrix.io/attempt")), []
        ).append(item)
    best: dict[str, tuple[int, list[Mapping[str, Any]]]] = {}
    for (task, _attempt), items in attempts.items():
        try:
            announced = int(_annotation(items[0], "clustrix.io/secrets"))
            stamp = int(_annotation(items[0], "clustrix.io/stamp"))
        except ValueError:
            continue
        if len(items) != announced:
            continue
        if task not in best or stamp > best[task][0]:
            best[task] = (stamp, items)
    outcomes: dict[int, bytes] = {}
    for _stamp, items in best.values():
        parts: dict[int, dict[int, bytes]] = {}
        counts: dict[int, int] = {}
        macs: dict[int, bytes] = {}
        for item in items:
            for name, value in (item.get("data") or {}).items():
                fields = name.split(".")
                raw = base64.b64decode(value)
                if len(fields) == 2 and fields[1] == "mac" and fields[0].isdigit():
                    macs[int(fields[0])] = raw
                elif len(fields) == 3 and all(f.isdigit() for f in fields):
                    index, number, count = (int(f) for f in fields)
                    parts.setdefault(index, {})[number] = raw
                    counts[index] = count
        for index, pieces in parts.items():
            if len(pieces) != counts[index] or index not in macs:
                continue
            data = b"".join(pieces[n] for n in range(counts[index]))
            expected = hmac.new(key, data, hashlib.sha256).hexdigest().encode()
            if hmac.compare_digest(expected, macs[index]):
                outcomes[index] = data
    return outcomes
