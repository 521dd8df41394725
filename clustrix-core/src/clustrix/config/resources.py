"""Resource requests (cores, memory, time, ...) parsed and validated at decoration time."""

from __future__ import annotations

import math
import re
from typing import Any

import attrs

_MEMORY_UNITS = {
    "": 1,
    "B": 1,
    "K": 1024,
    "KB": 1000,
    "KIB": 1024,
    "M": 1024**2,
    "MB": 1000**2,
    "MIB": 1024**2,
    "G": 1024**3,
    "GB": 1000**3,
    "GIB": 1024**3,
    "T": 1024**4,
    "TB": 1000**4,
    "TIB": 1024**4,
    "KI": 1024,
    "MI": 1024**2,
    "GI": 1024**3,
    "TI": 1024**4,
}
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_MEMORY_HINT = "an amount like '32GB', '512MB', '8G', '16Gi', '4GiB' or '1TB' (units KB/MB/GB/TB, KiB/MiB/GiB/TiB)"
_TIME_HINT = "'HH:MM:SS' (e.g. '04:00:00'), 'D-HH:MM:SS' (e.g. '1-12:00:00'), 'MM:SS' or a number of minutes (e.g. 90)"


#: An ``int`` memory request below this many bytes is refused: ``memory=1024`` meant megabytes, not 1 KiB.
MIN_MEMORY_BYTES = 1024**2


def parse_memory(value: str | int, *, parameter: str = "memory") -> int:
    """Return a memory request in bytes; an ``int`` is taken as bytes and must be at least 1 MiB.

    Decimal units (``GB``) are powers of 1000, binary units (``GiB``, ``Gi``) and the
    scheduler-style bare letters (``8G``) are powers of 1024, as SLURM reads them. An ``int``
    below :data:`MIN_MEMORY_BYTES` is refused: ``memory=1024`` is a megabyte count written
    without its unit far more often than a request for 1 KiB, which no scheduler can honour.
    """
    if isinstance(value, bool):
        raise ValueError(f"{parameter}={value!r} is not valid: use {_MEMORY_HINT}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"{parameter}={value!r} must be positive: use {_MEMORY_HINT}")
        if value < MIN_MEMORY_BYTES:
            raise ValueError(
                f"{parameter}={value!r} is {value} bytes (an int is a number of bytes), less than 1 MiB: "
                f"write the unit, e.g. {parameter}='{value}MB' or {parameter}='{value}MiB'"
            )
        return value
    if not isinstance(value, str):
        raise ValueError(f"{parameter}={value!r} is not valid: use {_MEMORY_HINT}")
    match = _MEMORY_RE.match(value)
    if not match or match.group(2).upper() not in _MEMORY_UNITS:
        raise ValueError(f"{parameter}={value!r} is not valid: use {_MEMORY_HINT}")
    amount = float(match.group(1)) * _MEMORY_UNITS[match.group(2).upper()]
    if amount < 1:
        raise ValueError(f"{parameter}={value!r} must be positive: use {_MEMORY_HINT}")
    return int(amount)


def parse_time(value: str | int | float, *, parameter: str = "time") -> int:
    """Return a wall-time request in seconds; a number is taken as minutes (as sbatch does)."""
    if isinstance(value, bool):
        raise ValueError(f"{parameter}={value!r} is not valid: use {_TIME_HINT}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{parameter}={value!r} is not a finite number: use {_TIME_HINT}")
        if value <= 0 or round(value * 60) <= 0:  # 0.001 minutes would round to no time at all
            raise ValueError(f"{parameter}={value!r} must be at least one second: use {_TIME_HINT}")
        return round(value * 60)
    if not isinstance(value, str):
        raise ValueError(f"{parameter}={value!r} is not valid: use {_TIME_HINT}")
    text = value.strip()
    days = 0
    match = re.fullmatch(r"(\d+)-(\d{1,2}(?::\d{1,2}){0,2})", text)
    if match:
        days = int(match.group(1))
        text = match.group(2)
        parts = text.split(":")
        # D-HH, D-HH:MM, D-HH:MM:SS
        parts += ["0"] * (3 - len(parts))
    elif re.fullmatch(r"\d+", text):
        parts = [str(int(text) // 60), str(int(text) % 60), "0"]
    elif re.fullmatch(r"\d+:\d{1,2}", text):
        parts = ["0", *text.split(":")]
    elif re.fullmatch(r"\d+:\d{1,2}:\d{1,2}", text):
        parts = text.split(":")
    else:
        raise ValueError(f"{parameter}={value!r} is not valid: use {_TIME_HINT}")
    hours, minutes, seconds = (int(p) for p in parts)
    if minutes >= 60 or seconds >= 60 or (days and hours >= 24):
        raise ValueError(f"{parameter}={value!r} is out of range: use {_TIME_HINT}")
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise ValueError(f"{parameter}={value!r} must be positive: use {_TIME_HINT}")
    return total


def format_hours(seconds: int, *, width: int = 2) -> str:
    """Render seconds as ``HH:MM:SS`` with hours beyond 24 (``48:00:00``), the form PBS and Grid Engine read.

    Neither reads a day prefix (OpenPBS and Torque take digits, ``:`` and ``.`` only); ``width``
    pads the hours (``width=1``: ``4:00:00``).
    """
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:0{width}d}:{minutes:02d}:{secs:02d}"


def format_time(seconds: int) -> str:
    """Render seconds as ``D-HH:MM:SS`` (or ``HH:MM:SS`` below a day), the form every scheduler reads."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def _check_count(parameter: str, value: Any, *, minimum: int, example: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{parameter}={value!r} is not valid: use {parameter} >= {minimum}, e.g. {example}")
    return value


def check_partition_queue(partition: str | None, queue: str | None, *, prefix: str = "") -> None:
    """Refuse a ``partition`` and a ``queue`` that disagree: every scheduler has one of the two, not both.

    SLURM calls it a partition, PBS and Grid Engine a queue; clustrix sends either name to the
    scheduler's own option, so two different values would drop one silently.
    """
    if partition and queue and partition != queue:
        raise ValueError(
            f"{prefix}partition={partition!r} and {prefix}queue={queue!r} disagree: they name the same thing "
            f"(a SLURM partition, a PBS or Grid Engine queue); give one of them"
        )


def _check_name(parameter: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{parameter}={value!r} is not valid: use a non-empty name such as {parameter}='debug'")
    if any(c in value for c in "\n\r\0"):
        # it becomes a line of the batch script (#SBATCH --partition=...): a line break would add directives
        raise ValueError(f"{parameter}={value!r} is not valid: use a single-line name such as {parameter}='debug'")
    return value


@attrs.frozen(kw_only=True)
class Resources:
    """What one call asks of the scheduler. Memory is kept in bytes, time in seconds.

    Build it with :meth:`parse`, which accepts the user-facing forms (``"32GB"``,
    ``"04:00:00"``) and raises ``ValueError`` naming the parameter. ``extra`` holds
    backend-specific options (``account``, ``qos``, ``cpu_limit``, ...) passed through
    to the scheduler plugin untouched.
    """

    cores: int | None = None
    memory: int | None = None
    time: int | None = None
    partition: str | None = None
    queue: str | None = None
    gpus: int | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)

    @classmethod
    def parse(
        cls,
        *,
        cores: Any = None,
        memory: Any = None,
        time: Any = None,
        partition: Any = None,
        queue: Any = None,
        gpus: Any = None,
        parameter_prefix: str = "",
        **extra: Any,
    ) -> Resources:
        """Validate user-facing values; ``parameter_prefix`` (``"default_"``) names config keys in errors."""
        p = parameter_prefix
        partition = _check_name(f"{p}partition", partition)
        queue = _check_name(f"{p}queue", queue)
        check_partition_queue(partition, queue, prefix=p)
        return cls(
            cores=_check_count(f"{p}cores", cores, minimum=1, example=f"{p}cores=4"),
            memory=None if memory is None else parse_memory(memory, parameter=f"{p}memory"),
            time=None if time is None else parse_time(time, parameter=f"{p}time"),
            partition=partition,
            queue=queue,
            gpus=_check_count(f"{p}gpus", gpus, minimum=0, example=f"{p}gpus=1"),
            extra=extra,
        )

    def with_defaults(self, defaults: Resources) -> Resources:
        """Fill unset fields from ``defaults`` (the configured ``default_*`` values).

        ``partition`` and ``queue`` are one setting under two names: a function that gives either
        takes neither from the defaults (``queue="long"`` replaces a configured ``default_partition``).
        """
        mine = {"partition", "queue"} if self.partition or self.queue else set()
        changes = {
            field.name: getattr(defaults, field.name)
            for field in attrs.fields(Resources)
            if field.name != "extra" and field.name not in mine and getattr(self, field.name) is None
        }
        return attrs.evolve(self, **changes, extra={**defaults.extra, **self.extra})
