"""The progress bar of .map() and Executor.map, and the call counts of 'clustrix jobs' and 'status'."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import clustrix
from clustrix import cluster, configure
from clustrix.config.settings import get_config


def _nap(x: int) -> int:
    import time

    time.sleep(0.4)
    if x == 3:
        raise ValueError("three")
    return x


def test_a_map_draws_a_bar_of_its_calls_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    napping = cluster(executor="process", max_workers=2)(_nap)
    assert napping.map([0, 1, 2, 4], progress=True) == [0, 1, 2, 4]
    err = capsys.readouterr().err
    assert "_nap" in err and "4/4" in err and "call" in err


def test_the_bar_counts_failed_calls(capsys: pytest.CaptureFixture[str]) -> None:
    napping = cluster(executor="process", max_workers=2)(_nap)
    with pytest.raises(ValueError, match="three"):
        napping.map(range(5), progress=True)
    assert "1 failed" in capsys.readouterr().err


def test_no_bar_where_nobody_watches_or_when_turned_off(capsys: pytest.CaptureFixture[str]) -> None:
    napping = cluster(executor="process", max_workers=2)(_nap)
    assert napping.map([0, 1, 2]) == [0, 1, 2]  # pytest's stdout is no terminal
    configure(progress=True)
    assert napping.map([0, 1, 2], progress=False) == [0, 1, 2]
    assert cluster(progress=False, executor="process")(_nap).map([0, 1, 2]) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_clustrix_progress_environment_variable_sets_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLUSTRIX_PROGRESS", "0")
    assert get_config().progress is False
    monkeypatch.setenv("CLUSTRIX_PROGRESS", "auto")
    assert get_config().progress is None
    with pytest.raises(ValueError, match="progress='sometimes'"):
        configure(progress="sometimes")


def test_executor_map_draws_a_bar_counting_failures(capsys: pytest.CaptureFixture[str]) -> None:
    with clustrix.Executor(executor="process", max_workers=2) as pool:
        results = pool.map(_nap, range(5), progress=True)
        assert [next(results) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(ValueError):
            next(results)
    err = ""
    deadline = time.monotonic() + 30
    while "5/5" not in err and time.monotonic() < deadline:  # done-callbacks run just after the waiters wake
        err += capsys.readouterr().err
        time.sleep(0.01)
    assert "5/5" in err and "1 failed" in err


def _slow(x: int) -> int:
    import time

    time.sleep(0.7)
    return x


def test_executor_map_follows_the_calls_running_and_pending_while_its_futures_wait(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with clustrix.Executor(executor="process", max_workers=2) as pool:
        assert list(pool.map(_slow, range(6), progress=True)) == list(range(6))
    err = ""
    deadline = time.monotonic() + 30
    while "6/6" not in err and time.monotonic() < deadline:
        err += capsys.readouterr().err
        time.sleep(0.01)
    # the job's own counts, as for a remote array whose futures all resolve at its end
    assert "running" in err and "pending" in err and "6/6" in err


def test_a_running_local_map_reports_running_and_pending_counts() -> None:
    napping = cluster(executor="process", max_workers=2)(_nap)
    (whole,) = napping._submit([((x,), {}) for x in (0, 1, 2, 4, 5, 6)], whole=True)
    seen = None
    deadline = time.monotonic() + 60
    while seen is None and time.monotonic() < deadline:
        status = whole.last_status
        if status is not None and status.counts and status.counts["running"]:
            seen = status.counts
        time.sleep(0.01)
    assert seen is not None and sum(seen.values()) == 6 and seen["running"] <= 2
    assert whole.result(timeout=60) == [0, 1, 2, 4, 5, 6]
    final = whole.last_status
    assert final is not None and final.counts == {"done": 6, "failed": 0, "running": 0, "pending": 0}


def test_jobs_and_status_show_how_many_calls_of_an_array_finished_and_failed(tmp_path: Path) -> None:
    @cluster(cluster_type="subprocess", remote_work_dir=str(tmp_path))
    def check(x: int) -> int:
        if x == 1:
            raise ValueError("one")
        return x

    futures = check.submit_map(range(3))
    assert [f.exception(timeout=120) is not None for f in futures] == [False, True, False]
    cli = [sys.executable, "-m", "clustrix.cli"]
    jobs = subprocess.run([*cli, "jobs"], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "DONE/FAIL/RUN/PEND" in jobs and " 2/1/0/0 " in jobs
    status = subprocess.run([*cli, "status", futures[0].job_id], capture_output=True, text=True, timeout=120)
    assert "3 calls: 2 done, 1 failed, 0 running, 0 pending" in status.stdout, status
    data = json.loads(
        subprocess.run([*cli, "status", "--json", futures[0].job_id], capture_output=True, text=True).stdout
    )
    assert data["counts"] == {"done": 2, "failed": 1, "running": 0, "pending": 0}
