"""Reading the results channel back (pure): result ConfigMaps -> each call's outcome bytes.

The pod side is :mod:`clustrix_k8s.bootstrap`. Per array task, the ConfigMaps are grouped
by attempt (``clustrix.io/attempt``); an attempt counts only when all the ConfigMaps it
announced (``clustrix.io/objects``) are present and every call's encrypted bytes in it
carry a valid HMAC-SHA256 under the job's key. Of the attempts that count, the newest
(``clustrix.io/stamp``) wins, so after ``backoffLimit`` retries the last attempt's
outcome is the one returned, and an object someone else wrote (anyone who may create
ConfigMaps in the namespace can, the pods' own ServiceAccount included) neither hides the
real outcome nor is ever decrypted or unpickled.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from clustrix_k8s.bootstrap import attempt_context, keystream_xor, outcome_mac


def _annotation(item: Mapping[str, Any], name: str) -> str:
    return str(((item.get("metadata") or {}).get("annotations") or {}).get(name, ""))


def verified_outcomes(items: Iterable[Mapping[str, Any]], key: bytes, context: bytes) -> dict[int, bytes] | None:
    """Call index -> outcome bytes of one attempt's ConfigMaps; None unless every call in them is whole and signed.

    ``context`` is the attempt's :func:`clustrix_k8s.bootstrap.attempt_context`, as its objects announce it.
    """
    parts: dict[int, dict[int, bytes]] = {}
    counts: dict[int, int] = {}
    macs: dict[int, bytes] = {}
    nonces: dict[int, bytes] = {}
    try:
        for item in items:
            for name, value in (item.get("binaryData") or {}).items():
                fields = name.split(".")
                raw = base64.b64decode(value, validate=True)
                if len(fields) == 2 and fields[1] in ("mac", "nonce") and fields[0].isdigit():
                    (macs if fields[1] == "mac" else nonces)[int(fields[0])] = raw
                elif len(fields) == 3 and all(f.isdigit() for f in fields):
                    index, number, count = (int(f) for f in fields)
                    if counts.setdefault(index, count) != count:
                        return None
                    parts.setdefault(index, {})[number] = raw
                else:
                    return None
    except (ValueError, TypeError):
        return None
    if not parts or set(parts) != set(macs) or set(parts) != set(nonces):
        return None
    outcomes: dict[int, bytes] = {}
    for index, pieces in parts.items():
        if sorted(pieces) != list(range(counts[index])):
            return None
        sealed = b"".join(pieces[n] for n in range(counts[index]))
        if not hmac.compare_digest(outcome_mac(key, context, index, nonces[index], sealed), macs[index]):
            return None
        outcomes[index] = keystream_xor(sealed, key, nonces[index])
    return outcomes


def outcome_bytes(
    secrets: Iterable[Mapping[str, Any]], key: bytes, refused: list[str] | None = None
) -> dict[int, bytes]:
    """Call index -> outcome bytes, from the JSON items of a ConfigMap list: per task, the newest signed attempt.

    The names of newer attempts that were refused (incomplete, or a signature that does not
    verify) are appended to ``refused``.
    """
    attempts: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for item in secrets:
        labels = (item.get("metadata") or {}).get("labels") or {}
        attempts.setdefault(
            (str(labels.get("clustrix.io/task", "")), _annotation(item, "clustrix.io/attempt")), []
        ).append(item)
    best: dict[str, tuple[int, dict[int, bytes]]] = {}
    for (task, attempt), items in attempts.items():
        try:
            announced = {int(_annotation(item, "clustrix.io/objects")) for item in items}
            stamps = {int(_annotation(item, "clustrix.io/stamp")) for item in items}
        except ValueError:
            continue
        if announced != {len(items)} or len(stamps) != 1:
            continue
        (stamp,) = stamps
        if task in best and stamp <= best[task][0]:
            continue
        found = verified_outcomes(items, key, attempt_context(task, attempt, stamp))
        if found is not None:
            best[task] = (stamp, found)
        elif refused is not None:
            refused.append(attempt)
    outcomes: dict[int, bytes] = {}
    for _stamp, found in best.values():
        outcomes.update(found)
    return outcomes
