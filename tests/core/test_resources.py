from __future__ import annotations

import pytest

from clustrix import cluster
from clustrix.config.resources import Resources, format_time, parse_memory, parse_time


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("32GB", 32 * 1000**3),
        ("512MB", 512 * 1000**2),
        ("8G", 8 * 1024**3),
        ("16Gi", 16 * 1024**3),
        ("4GiB", 4 * 1024**3),
        ("100KB", 100_000),
        ("2KiB", 2048),
        ("1TB", 1000**4),
        ("1.5GB", 1_500_000_000),
        (" 2 gb ", 2 * 1000**3),
    ],
)
def test_memory_accepts_decimal_binary_and_scheduler_units(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("bad", ["32XB", "lots", "GB", "-1GB", "0MB", "", True, 3.5])
def test_memory_rejects_bad_values_naming_the_parameter_and_a_form(bad: object) -> None:
    with pytest.raises(ValueError, match=r"memory=.*(32GB|positive)"):
        parse_memory(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("04:00:00", 4 * 3600),
        ("1-12:00:00", 36 * 3600),
        ("30:15", 30 * 60 + 15),
        ("90", 90 * 60),
        (90, 90 * 60),
        ("2-00", 2 * 86400),
        ("100:00:00", 100 * 3600),
    ],
)
def test_time_accepts_slurm_forms_and_minutes(text: str | int, seconds: int) -> None:
    assert parse_time(text) == seconds


@pytest.mark.parametrize("bad", ["1 hour", "00:61:00", "1-25:00:00", "abc", "0", 0, -5, 0.001, "::"])
def test_time_rejects_bad_values_naming_the_parameter_and_the_forms(bad: object) -> None:
    with pytest.raises(ValueError, match=r"time=.*HH:MM:SS"):
        parse_time(bad)  # type: ignore[arg-type]


def test_format_time_round_trips_through_parse_time() -> None:
    for seconds in (59, 3600, 86399, 86400 + 3661, 10 * 86400):
        assert parse_time(format_time(seconds)) == seconds


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"memory": "32XB"}, "memory"),
        ({"time": "1 hour"}, "time"),
        ({"cores": 0}, "cores"),
        ({"cores": "4"}, "cores"),
        ({"gpus": -1}, "gpus"),
        ({"partition": ""}, "partition"),
    ],
)
def test_cluster_rejects_bad_resources_when_the_function_is_decorated(
    kwargs: dict[str, object], parameter: str
) -> None:
    with pytest.raises(ValueError, match=rf"^{parameter}="):

        @cluster(**kwargs)  # type: ignore[arg-type]
        def f() -> None:
            pass


def test_defaults_fill_only_unset_fields_and_extras_merge() -> None:
    mine = Resources.parse(cores=2, account="mine")
    defaults = Resources.parse(cores=8, memory="1GB", time="10", account="site", qos="low")
    merged = mine.with_defaults(defaults)
    assert (merged.cores, merged.memory, merged.time) == (2, 1000**3, 600)
    assert merged.extra == {"account": "mine", "qos": "low"}
