"""The plan: which units a job needs (the referenced local modules, ``ship_modules``, and what they import)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from clustrix.config.resources import parse_memory
from clustrix.errors import LocalCodeError
from clustrix.remote.environment.interpreter import RUNNER_MODULES
from clustrix.remote.localcode.detection import locate
from clustrix.remote.localcode.units import CodeUnit, make_unit, unit_imports

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig

DEFAULT_MAX_MODULE_SIZE = "20MB"


@attrs.frozen
class CodePlan:
    """The units a job needs, and the modules the remote Python must import (checked before submit)."""

    units: tuple[CodeUnit, ...] = ()
    modules: tuple[str, ...] = ()


def _names(config: ClusterConfig | Mapping[str, Any] | None, key: str) -> list[str]:
    value = config.get(key) if config is not None else None
    if isinstance(value, str):
        value = [value]
    return [str(v) for v in value or ()]


def max_module_size(config: ClusterConfig | Mapping[str, Any] | None) -> int:
    """The largest unit ``config`` lets travel, in bytes (``max_module_size``, default 20MB)."""
    value = (config.get("max_module_size") if config is not None else None) or DEFAULT_MAX_MODULE_SIZE
    return parse_memory(value, parameter="max_module_size")


def plan_code(
    referenced: Iterable[str],
    config: ClusterConfig | Mapping[str, Any] | None,
    *,
    needs: Sequence[str] = RUNNER_MODULES,
) -> CodePlan:
    """The local units behind ``referenced`` module names (plus ``needs`` and ``ship_modules``), transitively."""
    exclude = set(_names(config, "exclude_modules"))
    limit = max_module_size(config)
    explicit = _names(config, "ship_modules")
    for name in explicit:
        if locate(name.split(".")[0]) is None and name.split(".")[0] not in exclude:
            raise LocalCodeError(
                f"ship_modules lists {name!r}, which is not a local module here (it is installed, built in, or "
                "cannot be found on sys.path): remove it from ship_modules"
            )
    wanted = [*sorted(set(referenced)), *needs, *explicit]
    units: dict[str, CodeUnit] = {}
    todo = [name.split(".")[0] for name in wanted]
    seen: set[str] = set()
    while todo:
        top = todo.pop(0)
        if top in seen or top in exclude:
            continue
        seen.add(top)
        origin = locate(top)
        if origin is None:
            continue
        unit = make_unit(origin, limit=limit)
        units[top] = unit
        todo.extend(sorted(unit_imports(unit)))
    modules = sorted({name for name in wanted if name.split(".")[0] in units})
    return CodePlan(units=tuple(units[k] for k in sorted(units)), modules=tuple(modules))


def describe(plan: CodePlan) -> list[Mapping[str, Any]]:
    """What ``plan`` ships, one dict per unit (for logs, the CLI and tests)."""
    return [
        {"name": u.name, "label": u.label, "size": u.size, "source": u.source, "distribution": u.distribution}
        for u in plan.units
    ]
