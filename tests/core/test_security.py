"""Secrets stay out of reprs and the registry; values that become script lines hold no line break."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from clustrix import cluster, configure, get_config, registry
from clustrix.config import resolve_config
from clustrix.errors import ConfigurationError
from clustrix.jobs import JobHandle, JobSpec

SECRET = "s3cret-Tok3n"


def test_the_repr_of_a_configuration_shows_no_password_and_no_variable_value() -> None:
    configure(password=SECRET, environment_variables={"API_TOKEN": SECRET + "-env"})
    config = get_config()
    spec = JobSpec(name="f", func=print, arguments=[((), {})], config=config)
    for text in (repr(config), str(config), repr(spec)):
        assert SECRET not in text
        assert "API_TOKEN" in text and "password" in text  # the names are still there to debug with
    assert config.password == SECRET  # the value itself is unchanged


def test_the_registry_stores_variable_names_but_no_values_and_no_password(isolated_clustrix: Path) -> None:
    configure(password=SECRET, environment_variables={"API_TOKEN": SECRET + "-env"})
    spec = JobSpec(name="f", func=print, arguments=[((), {})], config=get_config())
    registry.record(spec, JobHandle(job_id=spec.job_id, scheduler="ssh"))
    stored = registry.get(spec.job_id).config
    assert stored["environment_variable_names"] == ["API_TOKEN"]
    assert "environment_variables" not in stored and "password" not in stored
    for path in (isolated_clustrix / "data").iterdir():  # the database and its WAL, byte for byte
        assert SECRET.encode() not in path.read_bytes(), path.name


SINGLE_LINE = {
    "remote_work_dir": "/scratch/me\n#SBATCH --uid=0",
    "python_executable": "python3\ntouch /tmp/x",
    "conda_env_name": "env\nrm -rf ~",
    "default_partition": "debug\n#SBATCH --qos=high",
    "default_queue": "debug\r#PBS -q x",
    "cluster_host": "host\nx",
    "module_loads": ["gcc\nid"],
    "pre_execution_commands": ["ok", "first\nsecond"],
}


@pytest.mark.parametrize("key", sorted(SINGLE_LINE))
def test_a_value_with_a_line_break_is_refused_when_configured(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    value: Any = SINGLE_LINE[key]
    with pytest.raises(ConfigurationError, match=rf"{key}.*line break"):
        configure(**{key: value})
    with pytest.raises(ConfigurationError, match=rf"{key}.*line break"):
        resolve_config(overrides={key: value})
    if isinstance(value, str):
        monkeypatch.setenv(f"CLUSTRIX_{key.upper()}", value)
        with pytest.raises(ConfigurationError, match=rf"{key}.*line break"):
            get_config()


@pytest.mark.parametrize("keyword", ["partition", "queue"])
def test_a_partition_or_queue_with_a_line_break_is_refused_at_decoration(keyword: str) -> None:
    with pytest.raises(ValueError, match=rf"{keyword}=.*single-line"):
        cluster(**{keyword: "debug\n#SBATCH --uid=0"})(print)
