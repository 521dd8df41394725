"""Plugins add commands to ``clustrix`` and checks to ``clustrix doctor`` (core knows no transport)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clustrix.cli.app import main
from clustrix.errors import ConfigurationError
from clustrix.plugin.hookspecs import hookimpl
from clustrix.plugin.manager import get_plugin_manager, reset_plugins


class Greeter:
    """A plugin with one command and one doctor check."""

    def __init__(self, name: str = "greet") -> None:
        self.name = name

    @hookimpl
    def clustrix_cli_commands(self, add: Callable[..., argparse.ArgumentParser]) -> None:
        def greet(args: argparse.Namespace) -> int:
            print(f"hello {args.who}" + (" (json)" if args.json else ""))
            return 3

        add(self.name, greet, "say hello").add_argument("who")

    @hookimpl
    def clustrix_doctor_checks(self, config: Any) -> list[tuple[str, Callable[[], object]]]:
        return [("greeting", lambda: f"hello from {config.cluster_type}"), ("mood", lambda: ("warn", "grumpy"))]


@pytest.fixture
def plugin_manager() -> Iterator[Any]:
    reset_plugins()
    yield get_plugin_manager()
    reset_plugins()


def test_a_plugin_command_parses_its_arguments_and_returns_its_exit_code(
    plugin_manager: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin_manager.register(Greeter())
    assert main(["greet", "world", "--json"]) == 3
    assert capsys.readouterr().out == "hello world (json)\n"
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "greet" in capsys.readouterr().out


def test_a_plugin_command_may_not_take_a_name_core_has(plugin_manager: Any) -> None:
    plugin_manager.register(Greeter("jobs"))
    with pytest.raises(ConfigurationError, match="a plugin adds the command 'jobs', which clustrix already has"):
        main(["jobs"])


def test_doctor_runs_the_checks_plugins_add(plugin_manager: Any, capsys: pytest.CaptureFixture[str]) -> None:
    plugin_manager.register(Greeter())
    main(["doctor"])
    out = capsys.readouterr().out
    assert "[ok] greeting: hello from local" in out and "[WARN] mood: grumpy" in out, out
