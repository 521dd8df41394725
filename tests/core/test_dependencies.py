"""Futures as arguments (issue 21): the pure parts and the local executor's client-side chaining.

The scheduler side (SLURM, PBS, SGE, tsp, ssh) is tested end to end in tests/conformance/test_dependencies.py.
"""

from __future__ import annotations

import concurrent.futures
import os
import pickle
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from clustrix import cluster
from clustrix.api.dependencies import futures_in, replaced
from clustrix.batch import dependencies as held_jobs
from clustrix.batch.dependencies import lined_up, sweep_command, with_options
from clustrix.batch.dialect import ScriptJob
from clustrix.config.resources import Resources
from clustrix.config.settings import ClusterConfig
from clustrix.errors import DependencyError
from clustrix.plugin.types import Dependency, JobHandle, JobSpec
from clustrix.remote import jobdir, runner
from clustrix.remote.inputs import placeholder
from tests.core.test_batch import OneBased, job


def upstream_dir(tmp_path: Path, outcomes: dict[int, bytes], tasks_ended: int = 0) -> Path:
    directory = tmp_path / "20250101-000000-aaaaaaaaaaaa"
    (directory / "out").mkdir(parents=True, mode=0o700)
    directory.chmod(0o700)
    for index, data in outcomes.items():
        runner.write_atomic(directory / runner.outcome_name(index), data)
    for task in range(tasks_ended):
        runner.write_atomic(directory / runner.exit_name(task), b"0\n")
    return directory


def ref(directory: Path, index: int, tasks: int = 1, held: bool = True) -> dict[str, object]:
    return placeholder(job_id=directory.name, job_dir=str(directory), index=index, tasks=tasks, held=held)


def test_futures_are_found_and_replaced_in_lists_tuples_and_dicts() -> None:
    f1, f2 = concurrent.futures.Future[int](), concurrent.futures.Future[int]()
    call = ((f1, [1, {"a": f2}]), {"k": (f2,)})
    assert list(futures_in(call)) == [f1, f2, f2]
    assert replaced(call, lambda f: "F1" if f is f1 else "F2") == (("F1", [1, {"a": "F2"}]), {"k": ("F2",)})


def test_the_runner_puts_each_upstream_value_in_place(tmp_path: Path) -> None:
    directory = upstream_dir(tmp_path, {0: runner.encode_outcome_ok(10), 1: runner.encode_outcome_ok([2])})
    args, kwargs = runner.with_inputs((ref(directory, 0), [ref(directory, 1)]), {"x": {"y": ref(directory, 0)}})
    assert (args, kwargs) == ((10, [[2]]), {"x": {"y": 10}})


def test_a_failed_input_becomes_a_dependencyerror_with_the_upstream_exception_as_cause(tmp_path: Path) -> None:
    directory = upstream_dir(tmp_path, {0: runner.encode_outcome_error(ValueError("bad"))})
    encoded = runner.with_inputs((ref(directory, 0),), {})
    assert isinstance(encoded, bytes)
    outcome = jobdir.decode_outcome(encoded)
    assert not outcome.ok and isinstance(outcome.exception, DependencyError)
    assert (outcome.exception.upstream_job_id, outcome.exception.upstream_call) == (directory.name, 0)
    assert isinstance(outcome.exception.__cause__, ValueError) and str(outcome.exception.__cause__) == "bad"


def test_a_held_job_whose_input_nobody_ran_fails_at_once(tmp_path: Path) -> None:
    directory = upstream_dir(tmp_path, {}, tasks_ended=0)
    started = time.monotonic()
    outcome = jobdir.decode_outcome(runner.with_inputs((ref(directory, 0),), {}))  # type: ignore[arg-type]
    assert isinstance(outcome.exception, DependencyError) and "wrote no result" in str(outcome.exception)
    assert time.monotonic() - started < 5


def test_an_input_claimed_by_a_running_task_is_waited_for(tmp_path: Path) -> None:
    directory = upstream_dir(tmp_path, {}, tasks_ended=1)  # task 0 ended; task 1 runs call 0 (it stole it)
    (directory / runner.claim_name(0)).write_text("1\nhost 1\n")
    pool = concurrent.futures.ThreadPoolExecutor(1)
    reading = pool.submit(runner.with_inputs, (ref(directory, 0, tasks=2),), {})
    time.sleep(0.5)
    assert not reading.done()
    runner.write_atomic(directory / runner.outcome_name(0), runner.encode_outcome_ok("late"))
    assert reading.result(timeout=10) == (("late",), {})


def test_without_a_scheduler_hold_the_runner_waits_until_the_upstream_is_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(runner.INPUTS_WAIT_ENV, "1")
    directory = upstream_dir(tmp_path, {})
    pool = concurrent.futures.ThreadPoolExecutor(1)
    reading = pool.submit(runner.with_inputs, (ref(directory, 0),), {})
    time.sleep(0.5)
    assert not reading.done()
    (directory / runner.CANCELLED).touch()
    outcome = jobdir.decode_outcome(reading.result(timeout=10))  # type: ignore[arg-type]
    assert isinstance(outcome.exception, DependencyError)


def test_an_outcome_file_of_another_user_or_a_link_is_refused(tmp_path: Path) -> None:
    directory = upstream_dir(tmp_path, {})
    target = tmp_path / "elsewhere.pkl"
    target.write_bytes(runner.encode_outcome_ok(1))
    os.symlink(target, directory / runner.outcome_name(0))
    with pytest.raises(PermissionError):
        runner.with_inputs((ref(directory, 0),), {})


def test_tasks_line_up_element_wise_only_with_the_same_packing_and_call_i_reading_call_i() -> None:
    one_to_one = Dependency(
        job_id="a", native_id="1", job_dir="/w/a", size=4, tasks=4, calls=tuple((i, i) for i in range(4))
    )
    crossed = Dependency(
        job_id="b", native_id="2", job_dir="/w/b", size=4, tasks=4, calls=((0, 1), (1, 0), (2, 2), (3, 3))
    )
    packed = Dependency(
        job_id="c", native_id="3", job_dir="/w/c", size=4, tasks=2, calls=tuple((i, i) for i in range(4))
    )
    assert [d.elementwise for d in lined_up([one_to_one, crossed, packed], 4, 4)] == [True, False, False]


def _negate(x: int) -> int:
    if x < 0:
        raise ValueError("negative")
    return -x


def dependant_dir(tmp_path: Path, upstream: Path, n_calls: int) -> Path:
    """A claiming dependant of ``upstream``, one call per task, call i reading upstream call i (element-wise)."""
    directory = tmp_path / "20250101-000000-bbbbbbbbbbbb"
    (directory / "out").mkdir(parents=True)
    directory.chmod(0o700)
    payload = {
        "func": _negate,
        "arguments": [((ref(upstream, i, tasks=n_calls),), {}) for i in range(n_calls)],
        "tasks": [[i] for i in range(n_calls)],
        "claim": True,
        "inputs": True,
    }
    runner.write_atomic(directory / runner.PAYLOAD, runner.dumps(payload))
    return directory


def test_a_held_task_takes_another_tasks_call_only_once_its_input_is_there(tmp_path: Path) -> None:
    # upstream: call 0 done, call 1 still running in upstream task 1, call 2 done (it failed)
    upstream = upstream_dir(
        tmp_path, {0: runner.encode_outcome_ok(5), 2: runner.encode_outcome_error(ValueError("bad"))}, tasks_ended=1
    )
    (upstream / runner.claim_name(1)).write_text("1\nhost 1\n")
    directory = dependant_dir(tmp_path, upstream, 3)
    # task 0 (held for upstream task 0 only) runs its own call and takes call 2, never call 1
    assert runner.run_task(str(directory), 0) == 0  # call 2's DependencyError is not task 0's own failure
    assert sorted(os.listdir(directory / "out")) == ["0.claim", "0.pkl", "2.claim", "2.failed", "2.pkl", "task-0.exit"]
    assert jobdir.decode_outcome((directory / runner.outcome_name(0)).read_bytes()).value == -5
    failed = jobdir.decode_outcome((directory / runner.outcome_name(2)).read_bytes())
    assert isinstance(failed.exception, DependencyError) and failed.exception.upstream_call == 2
    # once upstream call 1 is there, its own task runs it (task 2 finds nothing left)
    runner.write_atomic(upstream / runner.outcome_name(1), runner.encode_outcome_ok(7))
    assert runner.run_task(str(directory), 2) == 0
    assert jobdir.decode_outcome((directory / runner.outcome_name(1)).read_bytes()).value == -7


def test_an_array_task_ends_before_python_when_every_call_of_its_job_is_done(tmp_path: Path) -> None:
    class Plain(OneBased):
        def directives(self, job: ScriptJob) -> list[str]:
            return []

    directory = tmp_path / "20250101-000000-abcdefabcdef"
    (directory / "out").mkdir(parents=True)
    script = Plain().render_script(job(job_dir=str(directory), python="/no/such/python"))
    env = {"PATH": os.environ["PATH"], "SGE_TASK_ID": "2"}
    for index in range(2):
        (directory / runner.outcome_name(index)).write_bytes(b"x")
    ran = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=False)
    assert ran.returncode == 127 and "/no/such/python" in ran.stderr  # call 2 has no outcome yet: Python starts
    (directory / runner.outcome_name(2)).write_bytes(b"x")
    ran = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=False)
    assert (ran.returncode, ran.stderr) == (0, "")
    assert (directory / runner.exit_name(1)).read_text() == "0\n"  # SGE task 2 is the engine's task 1
    assert oct((directory / runner.exit_name(1)).stat().st_mode & 0o777) == "0o600"
    assert not [name for name in os.listdir(directory / "out") if name.startswith(".tmp")]


def test_the_dialect_options_go_right_after_the_command_name() -> None:
    class Holding(OneBased):
        def dependency_options(self, job):  # type: ignore[no-untyped-def]
            return ["--after", ",".join(d.native_id for d in job.after)]

    after = (Dependency(job_id="a", native_id="7", job_dir="/w/a"),)
    assert with_options(Holding(), ["submit", "job.sh"], job(after=after)) == ["submit", "--after", "7", "job.sh"]
    assert with_options(Holding(), ["submit", "job.sh"], job()) == ["submit", "job.sh"]


# ---- the local executor: the client chains -----------------------------------------------------
@cluster(executor="thread")
def square(x: int) -> int:
    return x * x


@cluster(executor="thread")
def add(a: int, b: int = 0) -> int:
    return a + b


@cluster(executor="thread")
def total(values: list[int], extra: dict[str, int]) -> int:
    return sum(values) + extra["n"]


@cluster(executor="thread")
def boom(x: int) -> int:
    raise ValueError(f"boom {x}")


def test_the_local_executor_chains_futures_anywhere_in_the_arguments() -> None:
    first = square.submit_map(range(4))
    assert add.map(first, range(4)) == [x * x + x for x in range(4)]
    assert total.submit(first, {"n": square.submit(10)}).result(timeout=60) == 14 + 100
    assert add.submit(square.submit(3), b=square.submit(4)).result(timeout=60) == 25


def test_a_failed_local_input_raises_dependencyerror_and_the_rest_of_the_map_runs() -> None:
    inputs = [square.submit(1), boom.submit(2), square.submit(3)]
    results = add.submit_map(inputs)
    assert results[0].result(timeout=60) == 1 and results[2].result(timeout=60) == 9
    with pytest.raises(DependencyError) as info:
        results[1].result(timeout=60)
    assert info.value.upstream_job_id == inputs[1].job_id and isinstance(info.value.__cause__, ValueError)


def test_a_cancelled_local_input_fails_its_dependant() -> None:
    gate = concurrent.futures.Future[int]()  # a future nobody sets: cancelled below
    dependant = add.submit(gate)
    gate.cancel()
    with pytest.raises(DependencyError, match="cancelled"):
        dependant.result(timeout=60)


def test_resources_are_unchanged_by_dependencies() -> None:
    assert pickle.loads(pickle.dumps(Resources())) == Resources()


class Sweeping(OneBased):
    def sweep_argv(self, native_id: str) -> list[str] | None:
        return ["echo", f"sweep {native_id}"]

    def release_argv(self, native_id: str) -> list[str] | None:
        return ["echo", f"release {native_id}"]


def _upstream_handle(tmp_path: Path, job_id: str, size: int = 2) -> JobHandle:
    (tmp_path / job_id / "out").mkdir(parents=True)
    return JobHandle(job_id=job_id, scheduler="onebased", size=size, native_id="7", job_dir=str(tmp_path / job_id))


def _dependant(upstreams: list[str]) -> JobSpec:
    after = tuple(Dependency(job_id=u, native_id="7", job_dir=f"/w/{u}") for u in upstreams)
    return JobSpec(name="g", func=print, arguments=[((), {})], config=ClusterConfig({}), dependencies=after)


def test_an_upstream_is_swept_after_its_dependants_are_released_and_only_if_every_call_ended_well(
    tmp_path: Path,
) -> None:
    handle = _upstream_handle(tmp_path, "20250101-000000-cccccccccccc")
    command = shlex.join
    assert sweep_command(Sweeping(), handle, command) == "echo 'sweep 7'"  # nobody holds it
    held_jobs.keep([handle.job_id])
    assert sweep_command(Sweeping(), handle, command) is None  # its dependant is being submitted
    held_jobs.record(_dependant([handle.job_id]), "8")
    assert sweep_command(OneBased(), handle, command) is None  # nothing to sweep with
    line = sweep_command(Sweeping(), handle, command)
    assert line is not None

    def run() -> str:
        return subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True).stdout

    runner.write_atomic(Path(handle.job_dir) / runner.outcome_name(0), b"x")
    assert run() == ""  # call 1 has no outcome: its task may still run it
    runner.write_atomic(Path(handle.job_dir) / runner.outcome_name(1), b"x")
    assert run() == "release 8\nsweep 7\n"  # the dependant first: a cancelled task would fail it
    (Path(handle.job_dir) / runner.failed_name(1)).touch()
    assert run() == ""  # a failed call: the scheduler's afterok drops the dependant (DependencyError)
    held_jobs.keep([handle.job_id])
    held_jobs.record(_dependant([handle.job_id, "20250101-000000-dddddddddddd"]), "9")
    assert sweep_command(Sweeping(), handle, command) is None  # releasing 9 would drop its other upstream
    Sweeping.sweep_releases_dependants = True
    try:
        assert sweep_command(Sweeping(), handle, command) == "echo 'sweep 7'"  # SGE: a deleted task releases them
    finally:
        del Sweeping.sweep_releases_dependants


def test_a_dependant_that_was_not_submitted_after_all_no_longer_keeps_its_upstream_queued(tmp_path: Path) -> None:
    handle = _upstream_handle(tmp_path, "20250101-000000-eeeeeeeeeeee", size=1)
    runner.write_atomic(Path(handle.job_dir) / runner.outcome_name(0), b"x")
    command = shlex.join
    held_jobs.keep([handle.job_id])  # dependant A, then chained in the client instead
    held_jobs.keep([handle.job_id])  # dependant B, submitted
    held_jobs.record(_dependant([handle.job_id]), "8")
    assert sweep_command(Sweeping(), handle, command) is None  # A still counts as being submitted
    held_jobs.forget([handle.job_id])
    line = sweep_command(Sweeping(), handle, command)
    assert line is not None
    assert subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True).stdout == (
        "release 8\nsweep 7\n"
    )
    assert held_jobs.release(handle.job_id)  # B has read its input: nobody holds the upstream
    assert sweep_command(Sweeping(), handle, command) == "echo 'sweep 7'"


class SweepingWhenUnwaited(Sweeping):
    """A dialect that asks whether a queued job still waits for the array (here: a flag file says one does)."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def unwaited_check(self, native_id: str, command: Callable[[Sequence[str]], str]) -> str | None:
        return f"[ ! -e {shlex.quote(str(self.flag))} ]"


def test_an_upstream_another_process_holds_a_dependant_for_is_not_swept(tmp_path: Path) -> None:
    handle = _upstream_handle(tmp_path, "20250101-000000-ffffffffffff", size=1)
    runner.write_atomic(Path(handle.job_dir) / runner.outcome_name(0), b"x")
    waiting = tmp_path / "a-job-waits"
    dialect = SweepingWhenUnwaited(waiting)

    def run(line: str | None) -> str:
        assert line is not None
        return subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True).stdout

    waiting.touch()
    assert run(sweep_command(dialect, handle, shlex.join)) == ""  # this process knows no dependant; one waits
    waiting.unlink()
    assert run(sweep_command(dialect, handle, shlex.join)) == "sweep 7\n"
    held_jobs.keep([handle.job_id])
    held_jobs.record(_dependant([handle.job_id]), "8")
    waiting.touch()  # another dependant besides the one this process releases
    assert run(sweep_command(dialect, handle, shlex.join)) == "release 8\n"
