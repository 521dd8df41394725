"""A host that waits for a new login (an expired two-factor login): said once, and no job is given up for it."""

from __future__ import annotations

import logging

import pytest

from clustrix.api.outages import Outages
from clustrix.config.settings import ClusterConfig, resolve_config
from clustrix.errors import LoginNeededError


class SiteLoginError(LoginNeededError):
    def remedy(self, host: str) -> str:
        return f"run `site-login {host}`"


def test_a_lost_login_is_said_once_per_outage_and_its_end_too(caplog: pytest.LogCaptureFixture) -> None:
    config = _config_for("hpc")
    outages = Outages()
    with caplog.at_level(logging.WARNING, logger="clustrix.poller"):
        assert all(outages.failed(config, "clustrix.poll_failed", SiteLoginError("no login")) for _ in range(5))
        outages.answered(config)
        outages.answered(config)  # nothing was lost any more: nothing to say
        assert outages.failed(config, "clustrix.poll_failed", SiteLoginError("no login again"))
    lost = [r.getMessage() for r in caplog.records if "connection_lost" in r.getMessage()]
    back = [r.getMessage() for r in caplog.records if "connection_back" in r.getMessage()]
    assert len(lost) == 2 and len(back) == 1, caplog.text
    assert "connection to hpc lost: run `site-login hpc`" in lost[0], lost[0]


def test_any_other_failure_is_logged_each_time_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    outages = Outages()
    with caplog.at_level(logging.WARNING, logger="clustrix.poller"):
        for _ in range(3):
            assert not outages.failed(_config_for("hpc"), "clustrix.poll_failed", ConnectionResetError("reset"))
    assert caplog.text.count("clustrix.poll_failed") == 3, caplog.text


def _config_for(host: str) -> ClusterConfig:
    return resolve_config(overrides={"cluster_type": "local", "cluster_host": host})
