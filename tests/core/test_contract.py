"""The typed plugin contract: schedulers declare their capabilities, dialects are complete when created,
transports offer what core calls, and every error clustrix raises is a ClustrixError."""

from __future__ import annotations

import importlib.metadata
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import pytest

import clustrix
from clustrix import errors
from clustrix.batch.dialect import Dialect, ScriptJob
from clustrix.config.settings import ClusterConfig, resolve_config
from clustrix.plugin import manager
from clustrix.plugin.hookspecs import hookimpl
from clustrix.plugin.transport import LocalTransport, Transport
from clustrix.plugin.types import SCHEDULER_MEMBERS, JobHandle, JobSpec, Scheduler


class HalfDialect(Dialect):
    """A dialect whose author forgot the status query and its parser."""

    name = "half"

    def directives(self, job: ScriptJob) -> list[str]:
        return []

    def submit_argv(self, script_path: str, job: ScriptJob) -> list[str]:
        return ["true"]

    def parse_submit(self, stdout: str) -> str:
        return "1"

    def cancel_argv(self, native_id: str) -> list[str]:
        return ["true"]

    def log_name(self, native_id: str, task: int, stream: str) -> str:
        return stream


def test_an_incomplete_dialect_fails_when_it_is_created_naming_what_is_missing() -> None:
    with pytest.raises(TypeError, match="HalfDialect") as info:
        HalfDialect()
    assert "parse_status" in str(info.value) and "status_argv" in str(info.value)
    assert "directives" not in str(info.value)


class NoCapabilities:
    """A scheduler object with the hooks but none of the declared capabilities."""

    @hookimpl
    def clustrix_submit(self, spec: JobSpec, wake: Callable[[], None]) -> JobHandle:
        raise NotImplementedError

    @hookimpl
    def clustrix_poll(self, handles: Sequence[JobHandle]) -> dict[str, Any]:
        return {}

    @hookimpl
    def clustrix_fetch(self, handle: JobHandle) -> list[Any]:
        return []

    @hookimpl
    def clustrix_cancel(self, handle: JobHandle) -> bool:
        return True

    @hookimpl
    def clustrix_read_logs(self) -> str:
        return ""


class IncompletePlugin:
    @staticmethod
    @hookimpl
    def clustrix_register_schedulers(register: Callable[[str, object], None]) -> None:
        register("incomplete", NoCapabilities())


def test_a_scheduler_without_its_declared_capabilities_is_refused_at_registration_naming_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.metadata.entry_points
    extra = importlib.metadata.EntryPoint(
        name="incomplete", value="tests.core.test_contract:IncompletePlugin", group="clustrix"
    )

    def entry_points(**selection: Any) -> Any:
        found = list(real(**selection))
        return [*found, extra] if selection.get("group") == "clustrix" else found

    monkeypatch.setattr(manager.importlib.metadata, "entry_points", entry_points)
    manager.reset_plugins()
    try:
        with pytest.warns(manager.PluginWarning, match="'incomplete' failed to register its schedulers") as caught:
            names = manager.scheduler_names()
        message = str(caught[0].message)
        for member in ("needs_environment", "persistent", "python_needs", "resource_keys"):
            assert member in message
        assert "incomplete" not in names and "local" in names  # the other plugins still registered
    finally:
        monkeypatch.undo()
        manager.reset_plugins()


def test_every_registered_scheduler_declares_the_contract() -> None:
    for name in manager.scheduler_names():
        impl = manager.get_scheduler(name).impl
        assert isinstance(impl, Scheduler), name
        assert isinstance(impl.needs_environment, bool) and isinstance(impl.persistent, bool), name
        assert all(isinstance(module, str) for module in impl.python_needs), name
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in impl.resource_keys.items()), name
    local = manager.get_scheduler("local").impl
    assert (local.persistent, local.needs_environment, tuple(local.python_needs)) == (False, False, ())


def test_resource_keywords_come_from_the_registered_schedulers() -> None:
    declared = manager.plugin_resource_keys()
    assert declared["testsched_priority"] == "a resource keyword only this test plugin declares"
    for name in manager.scheduler_names():
        assert set(manager.get_scheduler(name).impl.resource_keys) <= set(declared)


def _members(protocol: type) -> set[str]:
    methods = {name for name, value in vars(protocol).items() if callable(value) and not name.startswith("_")}
    return {*protocol.__annotations__, *methods}


def test_the_contract_members_are_the_protocols() -> None:
    assert set(SCHEDULER_MEMBERS) == _members(Scheduler)


def test_the_local_transport_offers_what_core_calls_and_runs_scripts_as_raw_bytes() -> None:
    transport = LocalTransport()
    assert isinstance(transport, Transport)
    code, out, err = transport.run_bytes("printf '\\000\\377'; cat", input=b"\x01")
    assert (code, out, err) == (0, b"\x00\xff\x01", b"")
    assert _members(Transport) == {"host", "run", "run_bytes", "expand", "stat"}


def test_every_error_class_of_core_lives_in_errors_and_is_a_clustrix_error() -> None:
    classes = [
        value
        for value in vars(errors).values()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == errors.__name__
    ]
    # RemoteTraceback is never raised: it is chained as __cause__ so the remote traceback prints
    raised = [c for c in classes if c is not errors.RemoteTraceback]
    assert raised and all(issubclass(c, errors.ClustrixError) for c in raised)
    assert issubclass(errors.UnsafePathError, PermissionError)
    assert issubclass(errors.CommandError, RuntimeError)
    assert issubclass(errors.ParseError, ValueError)
    from clustrix.remote import runner

    assert runner.UnsafePathError is errors.UnsafePathError  # installed, the runner raises core's class


def test_the_top_level_names_are_the_user_api() -> None:
    assert "execute_loop_parallel" in clustrix.__all__  # promised by docs/local.md and docs/migration.md
    for name in ("JobSpec", "JobHandle", "JobStatus", "JobState", "Outcome", "hookimpl"):
        assert name not in clustrix.__all__
        with pytest.raises(AttributeError):
            getattr(clustrix, name)


def test_jobs_reached_differently_never_share_a_connection_key() -> None:
    one = resolve_config(overrides={"cluster_host": "login", "key_file": "~/.ssh/a"})
    other = resolve_config(overrides={"cluster_host": "login", "key_file": "~/.ssh/b"})
    assert one.connection_key != other.connection_key
    assert (
        one.connection_key == resolve_config(overrides={"cluster_host": "login", "key_file": "~/.ssh/a"}).connection_key
    )
    assert ClusterConfig({"cluster_type": "slurm"}).connection_key[0] == "slurm"
