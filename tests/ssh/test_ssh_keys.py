"""clustrix-ssh declares the configuration keys of its way in (issue 22: core no longer owns them)."""

from __future__ import annotations

import pytest

from clustrix import configure
from clustrix.config.settings import declarations, resolve_config
from clustrix.errors import ConfigurationError


def test_the_ssh_keys_are_declared_by_clustrix_ssh_not_by_core() -> None:
    declared = dict(declarations())
    assert {"known_hosts_file", "host_key_policy", "forward_agent"} <= set(declared["clustrix-ssh"])
    assert not {"known_hosts_file", "host_key_policy", "forward_agent"} & set(declared["clustrix-core"])


def test_a_host_key_policy_of_the_wrong_value_is_refused_naming_the_values() -> None:
    with pytest.raises(ConfigurationError, match=r"host_key_policy='yes' .*takes 'reject' \| 'accept-new'$"):
        configure(host_key_policy="yes")


def test_a_line_break_in_the_known_hosts_file_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"known_hosts_file=.* contains a line break"):
        configure(known_hosts_file="/tmp/a\nb")


def test_the_host_key_policy_is_part_of_the_connection_key() -> None:
    strict, lenient = (
        resolve_config(overrides={"cluster_host": "h", "host_key_policy": p}) for p in ("reject", "accept-new")
    )
    assert strict.connection_key != lenient.connection_key
