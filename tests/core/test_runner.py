"""The remote runner, run directly as ``python -m clustrix.remote.runner JOBDIR``."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from clustrix_testsched_jobdir import finished_tasks, read_outcomes, stage

from clustrix.config.settings import ClusterConfig
from clustrix.plugin.transport import LocalTransport
from clustrix.plugin.types import JobSpec
from clustrix.remote import runner
from clustrix.remote.jobdir import decode_outcome, plan_tasks
from tests.counting import counter_with_checkpoint


def _run(job_dir: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clustrix.remote.runner", job_dir, *extra], capture_output=True, text=True, timeout=120
    )


def _stage(
    tmp_path: Path, arguments: list[tuple[tuple[object, ...], dict[str, object]]], tasks: list[list[int]]
) -> str:
    def divide(a: float, b: float) -> float:  # a local function travels by value, like a notebook's
        return a / b

    spec = JobSpec(name="divide", func=divide, arguments=arguments, config=ClusterConfig({}))
    return stage(LocalTransport(), str(tmp_path / "work"), spec, tasks)


def test_runner_writes_each_outcome_and_an_exit_code_file_per_task(tmp_path: Path) -> None:
    job_dir = _stage(tmp_path, [((6, 3), {}), ((1, 0), {}), ((5,), {"b": 2})], plan_tasks(3, 2))
    first = _run(job_dir, "--task", "0")
    second = _run(job_dir, "--task", "1")
    assert (first.returncode, second.returncode) == (1, 0)  # task 0 holds the ZeroDivisionError
    assert finished_tasks(LocalTransport(), job_dir) == {0: 1, 1: 0}
    outcomes = read_outcomes(LocalTransport(), job_dir, 3)
    assert outcomes[0] is not None and outcomes[0].value == 2
    assert outcomes[1] is not None and isinstance(outcomes[1].exception, ZeroDivisionError)
    assert "divide" in (outcomes[1].traceback or "")
    assert f'File "{__file__}"' in (outcomes[1].traceback or "")  # not cloudpickle's <dynamic-code>
    assert "return a / b" in (outcomes[1].traceback or "")  # so the source line is shown too
    assert outcomes[2] is not None and outcomes[2].value == 2.5


def test_a_task_exits_1_for_its_own_failed_calls_only_not_for_one_it_took_from_another_task(tmp_path: Path) -> None:
    """SLURM holds an element-wise dependant task by task (aftercorr): a call another task took and
    failed must not fail this task's dependant, whose own inputs were fine."""

    def divide(a: float, b: float) -> float:
        return a / b

    arguments: list[tuple[tuple[object, ...], dict[str, object]]] = [((6, 3), {}), ((1, 0), {})]
    spec = JobSpec(name="divide", func=divide, arguments=arguments, config=ClusterConfig({}))
    job_dir = stage(LocalTransport(), str(tmp_path / "work"), spec, plan_tasks(2, 2), claim=True)
    assert _run(job_dir, "--task", "0").returncode == 0  # ran its call 0, then took call 1, which raised
    assert _run(job_dir, "--task", "1").returncode == 0  # nothing of its own was left to run
    outcomes = read_outcomes(LocalTransport(), job_dir, 2)
    assert outcomes[0] is not None and outcomes[0].value == 2
    assert outcomes[1] is not None and isinstance(outcomes[1].exception, ZeroDivisionError)
    other = stage(LocalTransport(), str(tmp_path / "again"), spec, plan_tasks(2, 2), claim=True)
    assert _run(other, "--task", "1").returncode == 1  # its own call raised


def test_functions_travel_by_value_with_their_file_name_nested_code_included() -> None:
    def outer(x: int) -> int:
        def inner() -> int:
            return x + 1

        return inner()

    loaded = pickle.loads(runner.dumps(outer))
    assert loaded(1) == 2
    assert loaded.__code__.co_filename == __file__
    nested = [c for c in loaded.__code__.co_consts if isinstance(c, types.CodeType)]
    assert [c.co_filename for c in nested] == [__file__]


def test_runner_takes_the_task_from_the_scheduler_environment(tmp_path: Path) -> None:
    job_dir = _stage(tmp_path, [((1, 1), {}), ((4, 2), {})], plan_tasks(2))
    subprocess.run(
        [sys.executable, "-m", "clustrix.remote.runner", job_dir],
        env={**os.environ, "SLURM_ARRAY_TASK_ID": "1"},
        check=True,
        timeout=120,
    )
    outcomes = read_outcomes(LocalTransport(), job_dir, 2)
    assert outcomes[0] is None
    assert outcomes[1] is not None and outcomes[1].value == 2


def test_job_directories_and_files_are_private_to_the_user(tmp_path: Path) -> None:
    job_dir = _stage(tmp_path, [((1, 1), {})], plan_tasks(1))
    _run(job_dir)
    for path in [Path(job_dir), Path(job_dir) / "out"]:
        assert path.stat().st_mode & 0o777 == 0o700
    for path in [Path(job_dir) / "payload.pkl", *Path(job_dir, "out").iterdir()]:
        assert path.stat().st_mode & 0o077 == 0


def test_runner_refuses_a_payload_other_users_could_write(tmp_path: Path) -> None:
    job_dir = _stage(tmp_path, [((1, 1), {})], plan_tasks(1))
    os.chmod(Path(job_dir) / "payload.pkl", 0o666)
    result = _run(job_dir)
    assert result.returncode == 3
    assert "writable by other users: refusing to unpickle" in result.stderr
    assert not (Path(job_dir) / "out" / "0.pkl").exists()


def test_client_refuses_outcomes_from_a_directory_other_users_could_write(tmp_path: Path) -> None:
    job_dir = _stage(tmp_path, [((1, 1), {})], plan_tasks(1))
    _run(job_dir)
    os.chmod(Path(job_dir) / "out", 0o777)
    with pytest.raises(PermissionError, match="out on localhost is writable by other users"):
        read_outcomes(LocalTransport(), job_dir, 1)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root (CI runs as root)")
def test_client_refuses_outcomes_owned_by_another_user_even_if_only_they_can_write_them(tmp_path: Path) -> None:
    job_dir = _stage(tmp_path, [((1, 1), {})], plan_tasks(1))
    _run(job_dir)
    for path in [Path(job_dir), Path(job_dir) / "out", Path(job_dir) / "out" / "0.pkl"]:
        os.chown(path, 65534, 65534)  # nobody: mode 0700/0600 still, but theirs
    with pytest.raises(PermissionError, match=r"belongs to another user"):
        read_outcomes(LocalTransport(), job_dir, 1)


def test_client_refuses_outcomes_under_a_work_dir_other_users_could_write(tmp_path: Path) -> None:
    job_dir = _stage(tmp_path, [((1, 1), {})], plan_tasks(1))
    _run(job_dir)
    os.chmod(Path(job_dir).parent, 0o777)  # anyone could swap the job directory for their own
    with pytest.raises(PermissionError, match="writable by other users"):
        read_outcomes(LocalTransport(), job_dir, 1)


def test_a_value_whose_class_is_missing_here_becomes_that_calls_error_not_a_fetch_failure() -> None:
    import pickle
    import types

    from clustrix.remote.runner import encode_outcome_ok

    module = types.ModuleType("clustrix_vanishing_module")
    exec("class Thing:\n    pass\n", module.__dict__)
    sys.modules[module.__name__] = module
    try:
        record = encode_outcome_ok(module.Thing())
    finally:
        del sys.modules[module.__name__]
    assert b"clustrix_vanishing_module" in pickle.loads(record)["value"]  # by reference, not by value
    outcome = decode_outcome(record)
    assert not outcome.ok
    assert outcome.error_type == "ModuleNotFoundError"
    assert "cannot be unpickled here" in (outcome.error_message or "")
    assert "clustrix_vanishing_module" in (outcome.error_message or "")


def test_a_rerun_task_skips_calls_whose_outcome_exists(tmp_path: Path) -> None:
    job_dir = _stage(tmp_path, [((6, 3), {}), ((8, 2), {})], [[0, 1]])  # one task, two calls, no claims
    assert _run(job_dir, "--task", "0").returncode == 0
    out = Path(job_dir) / "out"
    kept = (out / "0.pkl").stat().st_ino
    (out / "1.pkl").unlink()  # as if the task was requeued after call 0 and before call 1 finished
    assert _run(job_dir, "--task", "0").returncode == 0
    assert (out / "0.pkl").stat().st_ino == kept  # not run (and rewritten) again
    assert [o.value for o in read_outcomes(LocalTransport(), job_dir, 2) if o is not None] == [2.0, 4.0]


def test_an_unknown_task_number_is_an_error(tmp_path: Path) -> None:
    job_dir = _stage(tmp_path, [((1, 1), {})], plan_tasks(1))
    result = _run(job_dir, "--task", "5")
    assert result.returncode != 0
    assert "task 5 is not in 0..0" in result.stderr


def test_outcome_with_an_exception_class_missing_here_keeps_type_and_message() -> None:
    import pickle

    record = {
        "ok": False,
        "exception": b"not a pickle",
        "type": "remote_mod.RemoteOnly",
        "message": "m",
        "traceback": "tb",
    }
    outcome = decode_outcome(pickle.dumps(record))
    assert outcome.exception is None
    assert (outcome.error_type, outcome.error_message, outcome.traceback) == ("remote_mod.RemoteOnly", "m", "tb")


@pytest.mark.parametrize(("size", "max_tasks"), [(1, None), (10, 3), (10000, 7), (5, 100), (0, 3)])
def test_plan_tasks_covers_every_call_once_in_balanced_contiguous_tasks(size: int, max_tasks: int | None) -> None:
    tasks = plan_tasks(size, max_tasks)
    assert [i for task in tasks for i in task] == list(range(size))
    if tasks:
        sizes = [len(t) for t in tasks]
        assert max(sizes) - min(sizes) <= 1
        assert len(tasks) <= (max_tasks or size)


def test_the_schedulers_own_warning_signal_saves_the_checkpoint_and_ends_the_task_by_that_signal(
    tmp_path: Path,
) -> None:
    """PBS's way: SIGTERM, no requeue argv; the scheduler reruns the task, which resumes."""
    spec = JobSpec(name="count", func=counter_with_checkpoint(0.05), arguments=[((60,), {})], config=ClusterConfig({}))
    job_dir = stage(LocalTransport(), str(tmp_path / "work"), spec, plan_tasks(1), claim=True)
    env = {k: v for k, v in os.environ.items() if k != runner.REQUEUE_ENV}
    proc = subprocess.Popen(
        [sys.executable, "-m", "clustrix.remote.runner", job_dir, "--task", "0"],
        env={**env, runner.SIGNAL_ENV: "TERM"},
        stderr=subprocess.PIPE,
        text=True,
    )
    claim = Path(job_dir, runner.claim_name(0))
    while not claim.exists() and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # some steps counted
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM, stderr  # what the scheduler sees: the job ended by SIGTERM
    assert "call 0 checkpointed" in stderr
    assert not Path(job_dir, runner.exit_name(0)).exists()
    assert not Path(job_dir, runner.outcome_name(0)).exists()

    rerun = _run(job_dir, "--task", "0")
    assert rerun.returncode == 0, rerun.stderr
    [outcome] = read_outcomes(LocalTransport(), job_dir, 1)
    assert outcome is not None and outcome.value["counted"] == 60
    assert outcome.value["resumed_at"] > 0


def test_an_unknown_checkpoint_signal_name_is_refused_naming_the_variable(tmp_path: Path) -> None:
    job_dir = _stage(tmp_path, [((6, 3), {})], plan_tasks(1))
    result = subprocess.run(
        [sys.executable, "-m", "clustrix.remote.runner", job_dir],
        env={**os.environ, runner.SIGNAL_ENV: "NOPE"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "CLUSTRIX_CHECKPOINT_SIGNAL='NOPE' is not a signal name" in result.stderr
