"""Pure parsers for what Grid Engine's commands print (``qsub``, ``qstat``, ``qacct``, ``qconf``).

The argv that produce these texts live next to their parsers, so format and parser
cannot drift apart. Captured real output is kept under ``tests/sge/fixtures``.
"""

from __future__ import annotations


class ParseError(ValueError):
    """A Grid Engine command printed something this plugin does not understand."""


def parse_qconf(text: str) -> dict[str, str]:
    """``qconf -s...`` output (``name  value`` lines; a trailing ``\\`` continues a value) as a dict, in order."""
    values: dict[str, str] = {}
    key: str | None = None
    continued = False
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if continued and key is not None:
            values[key] = f"{values[key]} {raw.strip()}".strip()
        else:
            key, _, value = raw.strip().partition(" ")
            values[key] = value.strip()
        continued = values[key].endswith("\\")
        if continued:
            values[key] = values[key][:-1].rstrip()
    return values
