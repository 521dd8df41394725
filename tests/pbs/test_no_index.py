"""A login node that reaches no package index: the real OpenPBS's, in its network namespace, over SSH.

The namespace has no route out (asserted first), so the venv a call needs is built from wheels
this side downloads (the machine running the tests reaches an index; nothing inside the
namespace does) and ships once per file hash. These are issue 20's tests.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from clustrix import cluster
from clustrix.config.settings import resolve_config
from clustrix.errors import NoWheelError
from clustrix.plugin.manager import transport_for
from clustrix.remote.environment.prepare import forget_prepared, prepare_remote_environment
from tests.no_index import NUMPY, SDIST_ONLY, snapshot_with
from tests.testbed import openpbs

pytestmark = pytest.mark.testbed_pbs


@pytest.fixture
def fresh_host(pbs_ssh: openpbs.NetnsSSH, pbs_plugins: None) -> Iterator[dict[str, Any]]:
    """Options for the namespace's login node over SSH, with a work dir nothing was ever built in."""
    work = f"~/.clustrix/noindex-{uuid.uuid4().hex[:8]}"
    options = pbs_ssh.config(remote_work_dir=work, job_poll_interval=0.2)
    forget_prepared()
    yield options
    forget_prepared()
    transport = transport_for(resolve_config(overrides=options))
    transport.run(["sh", "-c", f"chmod -R u+w {shlex.quote(transport.expand(work))}; rm -rf {transport.expand(work)}"])


def test_the_login_node_has_no_route_to_any_index(pbs_complex: openpbs.OpenPBS) -> None:
    probe = (
        "import socket\n"
        "for host, port in (('151.101.0.223', 443), ('1.1.1.1', 443), ('8.8.8.8', 53)):\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=3).close(); print('reached', host)\n"
        "    except OSError as exc:\n"
        "        print('no', host, exc.errno)\n"
    )
    result = pbs_complex.run(["python3", "-c", probe], check=False)
    assert "reached" not in result.stdout and result.stdout.count("no ") == 3, result.stdout + result.stderr
    routes = pbs_complex.run(["ip", "route"], check=False).stdout
    assert "default" not in routes, routes


def test_numpy_is_built_from_wheels_shipped_over_ssh_and_the_second_time_nothing_ships(
    fresh_host: dict[str, Any],
) -> None:
    config = resolve_config(overrides=fresh_host)  # remote_index is "auto": the probe finds no index
    transport = transport_for(config)
    env = prepare_remote_environment(transport, config, snapshot_with(NUMPY))
    assert env.built and "numpy-2.2.6-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl" in (
        env.shipped_wheels
    ), env.shipped_wheels
    assert env.shipped_bytes > 10_000_000
    check = transport.run([env.python, "-c", "import numpy; print(numpy.__version__, numpy.arange(5).sum())"])
    assert check.stdout.split() == ["2.2.6", "10"], check.stdout + check.stderr

    forget_prepared()  # another process: the venv is there, nothing is probed, downloaded or sent
    again = prepare_remote_environment(transport, config, snapshot_with(NUMPY))
    assert not again.built and again.shipped_wheels == () and again.shipped_bytes == 0

    forget_prepared()  # another environment that shares the wheels: it ships none of them again
    other = prepare_remote_environment(transport, resolve_config(overrides={**fresh_host}), snapshot_with())
    assert other.built and other.shipped_wheels == () and other.python != env.python


def test_a_call_with_a_package_with_dependencies_runs_from_shipped_wheels(fresh_host: dict[str, Any]) -> None:
    import hypothesis

    @cluster(**fresh_host, replicate_distributions=["hypothesis"])
    def versions() -> tuple[str, str, str]:
        import importlib.metadata as md
        import socket

        try:
            socket.create_connection(("151.101.0.223", 443), timeout=3).close()
            reached = "reached"
        except OSError:
            reached = "no route"
        return md.version("hypothesis"), md.version("sortedcontainers"), reached

    hyp, sorted_containers, reached = versions()
    assert hyp == hypothesis.__version__ and sorted_containers and reached == "no route"


def test_an_sdist_only_distribution_is_refused_by_name_before_anything_is_submitted(
    fresh_host: dict[str, Any],
) -> None:
    config = resolve_config(overrides=fresh_host)
    transport = transport_for(config)
    with pytest.raises(NoWheelError) as err:
        prepare_remote_environment(transport, config, snapshot_with(SDIST_ONLY))
    message = str(err.value)
    assert "docopt==0.6.2" in message and "reaches no package index" in message
    assert "python_executable=" in message and "module_loads=" in message and "pip wheel" in message
    assert "Traceback" not in message and "Retrying" not in message
    listing = transport.run(["sh", "-c", f"ls {transport.expand(fresh_host['remote_work_dir'])}/envs"], check=False)
    assert ".clustrix-ready" not in listing.stdout and "requirements" not in listing.stdout
