"""Environment replication: rendering (pure), and the real venv build/reuse on the sshd host."""

from __future__ import annotations

import shlex
import sys
import time
from typing import Any, Literal

import cloudpickle
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustrix.errors import EnvironmentBuildError, PythonVersionMismatchError
from clustrix.remote.environment.activation import activation_lines, base_selection
from clustrix.remote.environment.capture import capture_environment
from clustrix.remote.environment.prepare import forget_prepared, prepare_remote_environment
from clustrix.remote.environment.venv import environment_key, render_build_script, requirements
from clustrix_ssh import get_transport
from tests.ssh.helpers import REPLICATE, config_for, run
from tests.testbed.sshd import SSHServer

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def test_snapshot_lists_python_and_pinned_distributions_with_their_source() -> None:
    snapshot = capture_environment(["clustrix-core"])
    assert snapshot["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    by_name = {d["name"]: d for d in snapshot["distributions"]}
    assert {"clustrix-core", "cloudpickle", "attrs", "pluggy"} <= set(by_name)
    assert by_name["cloudpickle"]["source"] == "pypi"
    assert by_name["clustrix-core"]["source"] in {"editable", "local", "pypi"}
    assert len(snapshot["hash"]) == 64
    assert capture_environment(["clustrix-core"])["hash"] == snapshot["hash"]


def test_requirements_pin_index_packages_and_leave_local_ones_to_overlays() -> None:
    snapshot = {
        "distributions": [
            {"name": "a", "version": "1.0", "source": "pypi"},
            {"name": "b", "version": "2.0", "source": "editable", "path": "/src/b", "digest": "x"},
            {"name": "c", "version": "3", "source": "vcs", "requirement": "c @ git+https://h/c@abc"},
        ]
    }
    assert requirements(snapshot) == ["a==1.0", "c @ git+https://h/c@abc"]


def test_environment_variables_do_not_change_the_venv_key_but_modules_do() -> None:
    snapshot = {"hash": "h"}
    plain = environment_key(snapshot, base_selection({}))
    with_vars = environment_key(snapshot, base_selection({"environment_variables": {"A": "1"}}))
    with_module = environment_key(snapshot, base_selection({"module_loads": ["python/3.11"]}))
    assert plain == with_vars != with_module


def test_activation_quotes_module_conda_names_and_values() -> None:
    lines = activation_lines(
        module_loads=["gcc; rm -rf ~"], conda_env_name="env $(x)", environment_variables={"A": "it's"}
    )
    assert "module load 'gcc; rm -rf ~'" in lines
    assert "conda activate 'env $(x)'" in lines
    assert f"export A={shlex.quote(chr(39).join(['it', 's']))}" in lines
    with pytest.raises(ValueError, match="not a valid variable name"):
        activation_lines(environment_variables={"A B": "1"})


NO_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
VALUE = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("'\"`$\\!*?[]{}()<>|&;#~=% \t\n-")),
        st.characters(blacklist_categories=NO_SURROGATES, blacklist_characters="\x00"),
    ),
    max_size=40,
)


@pytest.mark.testbed_ssh
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=VALUE, module=VALUE)
def test_activation_values_reach_the_remote_shell_byte_identical(sshd: SSHServer, value: str, module: str) -> None:
    transport = get_transport(
        sshd.host, port=sshd.port, user=sshd.user, key_file=sshd.key_file, known_hosts_file=sshd.known_hosts
    )
    lines = activation_lines(
        module_loads=[module],
        pre_execution_commands=["module() { printf '%s\\0' \"$2\"; }"],
        environment_variables={"CLUSTRIX_V": value},
    )  # a stand-in `module` function echoes the name it was asked to load
    lines.insert(0, lines.pop(1))  # define the function before it is used
    result = transport.run(["sh", "-c", "\n".join([*lines, 'printf "%s" "$CLUSTRIX_V"'])])
    assert result.ok, result.stderr
    assert result.stdout.split("\0") == [module, value]


def environment_value() -> str:
    import os

    return os.environ["CLUSTRIX_ODD"]


@pytest.mark.testbed_ssh
def test_variables_and_a_work_dir_with_metacharacters_and_the_word_task_reach_the_job(
    ssh_config: dict[str, Any], sshd: SSHServer
) -> None:
    odd = 'it\'s "$HOME" `id` $(id) ; & | \\ \n ü'
    config = config_for(
        ssh_config, environment_variables={"CLUSTRIX_ODD": odd}, remote_work_dir="~/odd dir/it's $x TASKS"
    )
    (outcome,) = run(config, environment_value)
    assert outcome is not None and outcome.value == odd
    assert sshd.run_as_user('ls -d "$HOME/odd dir/it\'s \\$x TASKS"/envs').returncode == 0


@pytest.mark.testbed_ssh
def test_a_python_major_minor_mismatch_is_refused_before_anything_is_submitted(
    ssh_config: dict[str, Any], sshd: SSHServer
) -> None:
    sshd.run_as_user("printf '#!/bin/sh\\necho 3.9\\n' > ~/python3.9; chmod 700 ~/python3.9")
    config = config_for(ssh_config, python_executable=f"{sshd.home}/python3.9", remote_work_dir="~/mismatch-work")
    with pytest.raises(PythonVersionMismatchError, match=r"Python 3\.9 but this Python is 3\.11") as caught:
        run(config, environment_value)
    assert "allow_python_mismatch=True" in str(caught.value)
    assert sshd.run_as_user("test -e ~/mismatch-work").returncode != 0  # nothing was written remotely
    transport = get_transport(
        sshd.host, port=sshd.port, user=sshd.user, key_file=sshd.key_file, known_hosts_file=sshd.known_hosts
    )
    allowed = config_for(ssh_config, python_executable=f"{sshd.home}/python3.9", allow_python_mismatch=True)
    assert prepare_remote_environment(transport, allowed, {"python": "3.11"}).python.endswith("python3.9")


@pytest.mark.testbed_ssh
def test_a_python_executable_without_clustrix_is_refused_before_anything_is_submitted(
    ssh_config: dict[str, Any], sshd: SSHServer
) -> None:
    config = config_for(ssh_config, python_executable="/usr/bin/python3", remote_work_dir="~/no-clustrix-work")
    with pytest.raises(EnvironmentBuildError, match=r"the remote Python /usr/bin/python3 cannot run") as caught:
        run(config, environment_value)
    assert "No module named 'cloudpickle'" in str(caught.value)  # what the job's runner file imports
    assert "pip install 'clustrix-core==" in str(caught.value)
    assert sshd.run_as_user("test -e ~/no-clustrix-work").returncode != 0  # nothing was written remotely


@pytest.mark.testbed_ssh
def test_a_second_submission_with_the_same_environment_builds_nothing(
    ssh_config: dict[str, Any], sshd: SSHServer
) -> None:
    transport = get_transport(
        sshd.host, port=sshd.port, user=sshd.user, key_file=sshd.key_file, known_hosts_file=sshd.known_hosts
    )
    config = config_for(ssh_config)
    snapshot = capture_environment(REPLICATE)
    first = prepare_remote_environment(transport, config, snapshot)  # builds if this machine never did
    forget_prepared()  # as a new process would
    started = time.perf_counter()
    again = prepare_remote_environment(transport, config, snapshot)
    remote_check = time.perf_counter() - started
    assert again.python == first.python and not again.built
    started = time.perf_counter()
    assert prepare_remote_environment(transport, config, snapshot) is again
    assert time.perf_counter() - started < 0.01  # remembered in-process: no remote command at all
    print(f"existing environment checked remotely in {remote_check * 1000:.0f} ms")


@pytest.mark.testbed_ssh
def test_concurrent_builds_of_one_environment_build_it_once(ssh_config: dict[str, Any], sshd: SSHServer) -> None:
    """Two builders race for a fresh key: the lock lets one build and the other reuse it."""
    import concurrent.futures

    transport = get_transport(
        sshd.host, port=sshd.port, user=sshd.user, key_file=sshd.key_file, known_hosts_file=sshd.known_hosts
    )
    work = transport.expand(f"~/race-{time.monotonic_ns()}")
    script = render_build_script(work_dir=work, key="k", requirement_lines=[], python_version=None)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: transport.run(["sh", "-c", script]), range(2)))
    assert all(r.ok for r in results), [r.stderr for r in results]
    assert sum("clustrix-env: built" in r.stdout for r in results) == 1
    assert all(f"ready {work}/envs/k/bin/python" in r.stdout for r in results)
