"""``retries=N`` where no scheduler is needed: the runner runs a call that raised again in its task,
the local executor in its worker; and the setting is checked where it is given (issue 21)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import cloudpickle
import pytest
from clustrix_testsched_jobdir import read_outcomes, stage

from clustrix import cluster
from clustrix.config.settings import ClusterConfig
from clustrix.errors import ConfigurationError
from clustrix.plugin.transport import LocalTransport
from clustrix.plugin.types import JobSpec
from clustrix.remote import runner
from clustrix.remote.jobdir import plan_tasks


def fails_once(folder: str, x: int, failing: int) -> int:
    """Call ``failing`` raises on its first attempt only (a marker file in ``folder`` remembers it)."""
    marker = os.path.join(folder, f"attempted-{x}")
    if x == failing and not os.path.exists(marker):
        Path(marker).touch()
        raise ValueError(f"call {x} failed on its first attempt")
    return x * x


def always_raises(kind: str) -> None:
    raise {"value": ValueError, "memory": MemoryError}[kind](f"{kind} error")


def _run_job(tmp_path: Path, func: object, arguments: list[tuple[tuple[object, ...], dict[str, object]]], retries: int):
    spec = JobSpec(name="job", func=func, arguments=arguments, config=ClusterConfig({}))  # type: ignore[arg-type]
    tasks = plan_tasks(len(arguments), 2)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the job cannot import this test module
    try:
        content = {"func": func, "arguments": arguments, "tasks": tasks, "claim": True, "retries": retries}
        payload = runner.dumps(content)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    job_dir = stage(LocalTransport(), str(tmp_path / "work"), spec, tasks, payload=payload)
    codes = [
        subprocess.run(
            [sys.executable, "-m", "clustrix.remote.runner", job_dir, "--task", str(t)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        for t in range(len(tasks))
    ]
    return job_dir, codes, read_outcomes(LocalTransport(), job_dir, len(arguments))


@pytest.mark.parametrize("retries", [0, 1])
def test_the_runner_runs_a_call_that_raised_again_in_its_task_only_with_retries(tmp_path: Path, retries: int) -> None:
    folder = tmp_path / "markers"
    folder.mkdir()
    arguments = [((str(folder), x, 3), {}) for x in range(6)]
    job_dir, runs, outcomes = _run_job(tmp_path, fails_once, arguments, retries)
    assert all(o is not None for o in outcomes)
    if retries:
        assert [o.value for o in outcomes if o is not None] == [x * x for x in range(6)]
        assert "call 3 raised builtins.ValueError" in "".join(r.stderr for r in runs)
        record = pickle.loads((Path(job_dir) / "out" / "3.pkl").read_bytes())
        assert record["attempts"] == 2  # the outcome says the call ran twice
        assert "attempts" not in pickle.loads((Path(job_dir) / "out" / "2.pkl").read_bytes())
        assert not (Path(job_dir) / "out" / "3.failed").exists()
    else:
        assert outcomes[3] is not None and isinstance(outcomes[3].exception, ValueError)
        assert [o.ok for o in outcomes if o is not None] == [True, True, True, False, True, True]


def test_a_call_that_raises_every_time_runs_retries_plus_one_times_and_says_so(tmp_path: Path) -> None:
    _job_dir, runs, (outcome,) = _run_job(tmp_path, always_raises, [(("value",), {})], 2)
    assert outcome is not None and isinstance(outcome.exception, ValueError)
    assert "the call raised on 3 attempts; retries=2" in (outcome.traceback or "")
    assert "".join(r.stderr for r in runs).count("running it again") == 2


def test_a_memory_error_is_not_run_again_in_its_task(tmp_path: Path) -> None:
    _job_dir, runs, (outcome,) = _run_job(tmp_path, always_raises, [(("memory",), {})], 3)
    assert outcome is not None and isinstance(outcome.exception, MemoryError)
    assert "running it again" not in "".join(r.stderr for r in runs)


def test_a_cancelled_job_runs_no_call_again(tmp_path: Path) -> None:
    seen: list[int] = []

    def may_retry() -> bool:
        seen.append(1)
        return False

    ok, encoded = runner.execute_with_retries(always_raises, ("value",), {}, 5, 0, may_retry)
    assert (ok, len(seen)) == (False, 1)
    assert "attempts" not in pickle.loads(encoded)


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_the_local_executor_runs_a_call_that_raised_again_with_retries(tmp_path: Path, executor: str) -> None:
    args = ([str(tmp_path)] * 50, range(50), [7] * 50)
    assert cluster(retries=1, executor=executor)(fails_once).map(*args) == [x * x for x in range(50)]
    (tmp_path / "attempted-7").unlink()
    with pytest.raises(ValueError, match="call 7 failed on its first attempt"):
        cluster(retries=0, executor=executor)(fails_once).map(*args)


def test_the_local_executor_notes_how_many_attempts_raised() -> None:
    with pytest.raises(ValueError) as info:
        cluster(retries=2, executor="thread")(always_raises)("value")
    if sys.version_info >= (3, 11):
        assert info.value.__notes__ == ["clustrix: the call raised on 3 attempts (retries=2)"]
    else:  # Python 3.10 has no exception notes: the original exception comes back as it was raised
        assert not hasattr(info.value, "__notes__") and str(info.value) == "value error"


@pytest.mark.parametrize("value", [-1, True, 1.5, "2"])
def test_retries_must_be_a_whole_number_of_at_least_zero(value: object) -> None:
    with pytest.raises(ConfigurationError, match="retries"):
        cluster(retries=value)(fails_once)


def _resubmit_script(job_dir: Path, calls: list[int], *, unless_cancelled: bool) -> subprocess.CompletedProcess[str]:
    from clustrix.batch.retry import render_resubmit

    script = render_resubmit(
        job_dir=str(job_dir), calls=calls, submit="echo 4242", marker="m", unless_cancelled=unless_cancelled
    )
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)


def _finished_job_dir(tmp_path: Path) -> Path:
    job_dir = tmp_path / "job"
    (job_dir / "out").mkdir(parents=True)
    for name in ["payload.pkl", "cancelled", *(f"out/{i}.{s}" for i in range(4) for s in ("pkl", "claim"))]:
        (job_dir / name).touch()
    for name in ["out/2.failed", "out/task-0.exit", "out/task-1.exit"]:
        (job_dir / name).touch()
    (job_dir / "out" / "5.claim").write_text("1\nnode 4242\n")  # a lost call: its task died
    return job_dir


def test_a_resubmit_forgets_only_the_calls_run_again_and_every_task_exit_code(tmp_path: Path) -> None:
    job_dir = _finished_job_dir(tmp_path)
    done = _resubmit_script(job_dir, [2, 3], unless_cancelled=False)
    assert (done.returncode, done.stdout) == (0, "@m reset\n4242\n")  # the submit command's answer follows
    left = sorted(p.name for p in (job_dir / "out").iterdir())
    assert left == ["0.claim", "0.pkl", "1.claim", "1.pkl", "5.claim"]
    assert (job_dir / "out" / "5.claim").read_text() == "-\n"  # lost, not run again: no task holds it
    assert (job_dir / "out" / "0.claim").read_text() == ""  # a finished call's claim is left alone
    assert not (job_dir / "cancelled").exists()  # clustrix retry runs a cancelled job's calls again


def test_a_lost_call_of_a_job_cancelled_through_clustrix_is_not_resubmitted(tmp_path: Path) -> None:
    job_dir = _finished_job_dir(tmp_path)
    done = _resubmit_script(job_dir, [3], unless_cancelled=True)
    assert done.returncode == 4 and "cancelled through clustrix" in done.stderr
    assert "4242" not in done.stdout and (job_dir / "out" / "3.pkl").exists()
