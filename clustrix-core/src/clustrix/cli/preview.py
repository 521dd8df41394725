"""``clustrix code`` and ``clustrix submit --dry-run``: what a function would take to the cluster, nothing submitted."""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import sys
from typing import Any

from clustrix.cli.output import emit
from clustrix.config.settings import get_config


def cmd_code(args: argparse.Namespace) -> int:
    """What of the user's own code a function would take to the cluster (nothing is submitted)."""
    from clustrix.remote import runner
    from clustrix.remote.localcode.detection import dumps_recording
    from clustrix.remote.localcode.plan import describe, plan_code

    function = runner.unwrap(_import_target(args.target, "code"))
    _, referenced = dumps_recording(function)
    plan = plan_code(referenced, get_config(), needs=())
    units = describe(plan)
    lines = [f"{'UNIT':<40} {'SIZE':>10}  SOURCE"]
    lines += [f"{u['label']:<40} {u['size']:>10}  {u['source']}" for u in units] or ["(nothing: no local code)"]
    lines.append(f"imported remotely before submit: {', '.join(plan.modules) or '-'}")
    emit({"units": units, "modules": list(plan.modules)}, args.json, "\n".join(lines))
    return 0


def _import_target(target: str, command: str) -> Any:
    """The object ``MODULE:FUNCTION`` names, imported as ``python -c "import MODULE"`` run here would."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{target!r} is not valid: use MODULE:FUNCTION, e.g. clustrix {command} mylib:run")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no {attribute!r} (from {target!r})") from None


def _cli_value(text: str) -> Any:
    """A command-line argument as a Python literal (``3``, ``'a'``, ``[1, 2]``), else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def cmd_submit(args: argparse.Namespace) -> int:
    """``clustrix submit --dry-run MODULE:FUNCTION [ARG...]``: the job script and command, nothing submitted."""
    from clustrix.api.decorator import ClusterFunction, cluster

    if not args.dry_run:
        raise ValueError(
            "clustrix submit only shows what would be submitted: add --dry-run "
            "(submit from Python with fn(...), fn.submit(...) or fn.map(...))"
        )
    target = _import_target(args.target, "submit --dry-run")
    if not callable(target):
        raise ValueError(f"{args.target!r} is not a function")
    function = target if isinstance(target, ClusterFunction) else cluster(target)
    values = [_cli_value(text) for text in args.args]
    keywords: dict[str, Any] = {}
    for item in args.keyword or []:
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier():
            raise ValueError(f"--kw {item!r} is not valid: use NAME=VALUE, e.g. --kw n_steps=500")
        keywords[name] = _cli_value(text)
    if args.map:
        if keywords:
            raise ValueError("--map takes positional iterables only (like fn.map); leave out --kw")
        shown = function.job_script.map(*values)
    else:
        shown = function.job_script(*values, **keywords)
    emit(shown.to_dict(), args.json, str(shown).rstrip("\n"))
    return 0
