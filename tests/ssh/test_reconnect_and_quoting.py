"""The transport heals a dropped link, and every value reaching the remote shell arrives intact."""

from __future__ import annotations

import shlex
import sys
import time
from typing import Any, Literal

import cloudpickle
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clustrix.errors import ConfigurationError
from clustrix.remote.environment.capture import capture_environment
from clustrix.remote.environment.prepare import prepare_remote_environment
from clustrix_ssh import SSHTransport, get_transport
from tests.ssh.helpers import REPLICATE, config_for, run
from tests.testbed.sshd import SSHServer

pytestmark = pytest.mark.testbed_ssh
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the remote side has no tests package
NO_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)


def connect(sshd: SSHServer) -> SSHTransport:
    return get_transport(
        sshd.host, port=sshd.port, user=sshd.user, key_file=sshd.key_file, known_hosts_file=sshd.known_hosts
    )


def test_commands_and_files_work_again_after_sshd_restarts(sshd: SSHServer) -> None:
    transport = connect(sshd)
    assert transport.run(["echo", "before"]).stdout == "before\n"
    transport.write_bytes("~/reconnect.txt", b"1")
    sshd.restart()  # kills the listener and every open connection
    assert transport.run(["echo", "after"]).stdout == "after\n"
    assert transport.read_bytes("~/reconnect.txt") == b"1"
    assert transport.connection.generation == 2


def test_a_link_that_drops_while_a_command_runs_raises_sshconnectionerror(sshd: SSHServer) -> None:
    import threading

    from clustrix_ssh import SSHConnectionError

    transport = connect(sshd)
    assert transport.run(["true"]).ok
    caught: list[BaseException] = []

    def long_command() -> None:
        try:
            transport.run(["sleep", "20"])
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            caught.append(exc)

    runner = threading.Thread(target=long_command)
    runner.start()
    time.sleep(1.0)
    sshd.restart()  # every open connection is killed mid-command
    runner.join(timeout=30)
    assert not runner.is_alive()
    assert len(caught) == 1 and isinstance(caught[0], SSHConnectionError), caught
    assert "may or may not have completed" in str(caught[0])
    assert transport.run(["echo", "again"]).stdout == "again\n"  # the next command reconnects


# Text that survives a UTF-8 round trip and has no NUL (no argv element can carry one),
# weighted towards what shells treat specially.
SHELL_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("'\"`$\\!*?[]{}()<>|&;#~=%^ \t\n\r-")),
        st.characters(blacklist_categories=NO_SURROGATES, blacklist_characters="\x00"),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(SHELL_TEXT, min_size=1, max_size=4), value=SHELL_TEXT)
def test_argv_and_env_values_reach_the_program_byte_identical(sshd: SSHServer, args: list[str], value: str) -> None:
    transport = connect(sshd)
    script = 'for a in "$@"; do printf "%s\\0" "$a"; done; printf "%s" "$CLUSTRIX_VALUE"'
    result = transport.run(["sh", "-c", script, "sh", *args], env={"CLUSTRIX_VALUE": value})
    assert result.ok, result.stderr
    *echoed, env_value = result.stdout.split("\0")
    assert echoed == args
    assert env_value == value


SAFE_NAME = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("'\"`$\\!*?[]{}()<>|&;#~=% -\n")), st.characters(min_codepoint=0x41, max_codepoint=0x24F)
    ),
    min_size=1,
    max_size=30,
).filter(lambda s: s not in {".", ".."} and "/" not in s)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=SAFE_NAME, data=st.binary(max_size=64))
def test_paths_with_metacharacters_work_for_files_and_as_cwd(sshd: SSHServer, name: str, data: bytes) -> None:
    transport = connect(sshd)
    directory = f"~/meta/{name}"
    transport.makedirs(directory)
    transport.write_bytes(f"{directory}/{name}", data)
    assert transport.read_bytes(f"{directory}/{name}") == data
    result = transport.run(["sh", "-c", 'pwd; cat -- "$1"', "sh", name], cwd=directory)
    assert result.ok, result.stderr
    assert result.stdout.encode(errors="surrogateescape").startswith(transport.expand(directory).encode())
    assert result.stdout.endswith(data.decode(errors="replace"))


def where_it_ran(tag: str) -> tuple[str, str, str]:
    import os

    return tag, os.getcwd(), os.environ.get("VIA_WRAPPER", "")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=SAFE_NAME)
@example(name="\n")  # a line break is refused when configured (it would start a new script line)
@example(name="it's $(id) `id` ; a\tb")
def test_a_job_runs_with_any_remote_work_dir_and_python_executable_name(
    sshd: SSHServer, ssh_config: dict[str, Any], name: str
) -> None:
    """Both settings reach remote shells (the launch script, the version check, the watch):
    a wrapper python and a work dir, each named with shell metacharacters, must just work;
    a name with a line break is refused when configured, before anything reaches a shell."""
    if any(c in name for c in "\n\r"):
        with pytest.raises(ConfigurationError, match="line break"):
            config_for(ssh_config, remote_work_dir=f"~/workdirs/{name}")
        with pytest.raises(ConfigurationError, match="line break"):
            config_for(ssh_config, python_executable=f"/usr/bin/{name}")
        return
    transport = connect(sshd)
    prepared = prepare_remote_environment(
        transport, config_for(ssh_config), capture_environment(REPLICATE)
    )  # a venv with clustrix; the wrapper sets it up as a job's script would (prelude: PYTHONPATH)
    transport.makedirs("~/pythons")
    wrapper = f"{transport.expand('~/pythons')}/{name}"
    lines = ["#!/bin/sh", *prepared.prelude, "export VIA_WRAPPER=yes", f'exec {shlex.quote(prepared.python)} "$@"']
    transport.write_bytes(wrapper, "\n".join([*lines, ""]).encode(), mode=0o700)
    work_dir = f"~/workdirs/{name}"
    config = config_for(ssh_config, python_executable=wrapper, remote_work_dir=work_dir)
    (outcome,) = run(config, where_it_ran, (name,))
    assert outcome is not None, "no outcome came back"
    tag, job_dir, via_wrapper = outcome.value
    assert tag == name
    assert via_wrapper == "yes"  # the job ran under python_executable
    assert job_dir.startswith(transport.expand(work_dir) + "/")
    assert transport.exists(job_dir)
