"""The local backend through the public API: call, submit, map, Executor, errors."""

from __future__ import annotations

import concurrent.futures
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import clustrix
from clustrix import JobError, cluster, execute_loop_parallel
from clustrix.local.backend import choose_executor, uses_io


@cluster(cores=2)
def square(x: int) -> int:
    return x * x


@cluster
def pid_of_worker(_: int) -> int:
    return os.getpid()


@cluster
def fail_with_value_error(x: int) -> None:
    raise ValueError(f"bad value {x}")


class UnpicklableError(Exception):
    def __reduce__(self):  # type: ignore[no-untyped-def]
        raise TypeError("this exception refuses to be pickled")


@cluster(executor="process")
def fail_unpicklably() -> None:
    raise UnpicklableError("cannot travel")


def test_calling_blocks_and_returns_the_result() -> None:
    assert square(7) == 49


def test_decorator_without_arguments_keeps_the_function_name_and_doc() -> None:
    @cluster
    def documented() -> int:
        """Docstring."""
        return 1

    assert documented.__name__ == "documented"
    assert documented.__doc__ == "Docstring."
    assert documented() == 1


def test_submit_returns_a_future_with_a_job_id() -> None:
    future = square.submit(5)
    assert isinstance(future, concurrent.futures.Future)
    assert future.result(timeout=30) == 25
    assert future.job_id


def test_map_returns_results_in_order_and_runs_in_other_processes() -> None:
    assert square.map(range(50)) == [x * x for x in range(50)]
    assert os.getpid() not in set(pid_of_worker.map(range(8)))


def test_map_of_many_arguments_zips_iterables_like_builtin_map() -> None:
    add = cluster(lambda a, b: a + b)
    assert add.map([1, 2, 3], [10, 20, 30]) == [11, 22, 33]
    assert add.map([], []) == []


def test_lambdas_and_closures_run_in_processes() -> None:
    offset = 100

    def closure(x: int) -> tuple[int, int]:
        return x + offset, os.getpid()

    results = cluster(executor="process")(closure).map([1, 2])
    assert [r[0] for r in results] == [101, 102]
    assert all(pid != os.getpid() for _, pid in results)
    assert cluster(executor="process")(lambda: "lambda ran")() == "lambda ran"


def test_remote_exception_keeps_its_type_message_and_remote_traceback() -> None:
    with pytest.raises(ValueError, match="bad value 3") as info:
        fail_with_value_error(3)
    cause = info.value.__cause__
    assert isinstance(cause, clustrix.RemoteTraceback)
    assert "fail_with_value_error" in cause.traceback_text
    assert "raise ValueError" in cause.traceback_text


def test_map_raises_the_first_failing_calls_exception() -> None:
    def maybe_fail(x: int) -> int:
        if x in (3, 5):
            raise KeyError(f"item {x}")
        return x

    with pytest.raises(KeyError, match="item 3"):
        cluster(executor="process")(maybe_fail).map(range(8))


def test_unpicklable_exception_becomes_job_error_with_type_message_and_traceback() -> None:
    with pytest.raises(JobError) as info:
        fail_unpicklably()
    error = info.value
    assert error.error_type is not None and error.error_type.endswith("UnpicklableError")
    assert "cannot travel" in str(error)
    assert error.remote_traceback is not None and "fail_unpicklably" in error.remote_traceback


def test_unpicklable_return_value_is_reported_as_the_calls_error() -> None:
    with pytest.raises(TypeError, match="return value could not be pickled"):
        cluster(executor="process")(lambda: threading.Lock())()


def test_threads_on_request_share_the_process_and_return_unpicklable_values() -> None:
    lock_maker = cluster(executor="thread")(lambda: (threading.Lock(), os.getpid()))
    lock, pid = lock_maker()
    assert pid == os.getpid()
    assert hasattr(lock, "acquire")


def test_auto_executor_picks_threads_for_io_and_processes_for_computation() -> None:
    def reads_a_file(path: str) -> str:
        with open(path) as fh:
            return fh.read()

    def computes(n: int) -> int:
        return sum(i * i for i in range(n))

    assert uses_io(reads_a_file) and not uses_io(computes)
    assert choose_executor(reads_a_file, "auto") == "thread"
    assert choose_executor(computes, "auto") == "process"
    assert choose_executor(reads_a_file, "process") == "process"


def test_execute_loop_parallel_binds_the_loop_variable_and_keeps_order() -> None:
    def scaled(i: int, factor: int) -> int:
        return i * factor

    assert execute_loop_parallel(scaled, "i", range(20), func_kwargs={"factor": 3}) == [3 * i for i in range(20)]
    with pytest.raises(ValueError, match="loop_var='i'"):
        execute_loop_parallel(scaled, "i", range(3), func_kwargs={"i": 1})


def test_executor_is_a_concurrent_futures_executor() -> None:
    with clustrix.Executor(cores=2) as executor:
        assert isinstance(executor, concurrent.futures.Executor)
        future = executor.submit(pow, 2, 10)
        assert list(executor.map(abs, [-1, -2, 3])) == [1, 2, 3]
        assert future.result() == 1024
    with pytest.raises(RuntimeError, match="shutdown"):
        executor.submit(abs, 1)


def test_cancelling_a_queued_local_call_cancels_it_and_it_never_runs() -> None:
    ran: list[int] = []

    def nap(tag: int) -> None:
        ran.append(tag)
        time.sleep(1.0)

    blocker = cluster(executor="thread", max_workers=1)(nap)
    first = blocker.submit(1)
    second = blocker.submit(2)
    assert second.cancel()
    assert second.cancelled()
    first.result(timeout=30)
    with pytest.raises(concurrent.futures.CancelledError):
        second.result()
    time.sleep(0.2)
    assert ran == [1]
    from clustrix.plugin.manager import get_scheduler

    assert second.job_id not in get_scheduler("local").impl._jobs  # nothing kept for a cancelled job


def test_execute_loop_parallel_stays_on_the_local_cores_whatever_clustrix_variables_say(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLUSTRIX_CLUSTER_TYPE", "slurm")
    monkeypatch.setenv("CLUSTRIX_EXECUTOR", "process")

    def where(i: int) -> tuple[int, int]:
        import os

        return i, os.getpid()

    # threads of this very process: not a SLURM job, not a process pool
    assert execute_loop_parallel(where, "i", range(5), executor="thread") == [(i, os.getpid()) for i in range(5)]


def test_sys_exit_in_a_thread_call_comes_back_as_that_calls_systemexit() -> None:
    def leave() -> None:
        sys.exit(3)

    with pytest.raises(SystemExit) as info:
        cluster(executor="thread")(leave)()
    assert info.value.code == 3


def test_function_defined_in_main_runs_in_a_process(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            from clustrix import cluster

            def helper(x):
                return x + 1

            @cluster(executor="process")
            def main_function(x):
                return helper(x), os.getpid()

            if __name__ == "__main__":
                value, pid = main_function(41)
                assert pid != os.getpid()
                print(value)
            """
        )
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "42"


def test_a_killed_worker_fails_the_call_with_a_job_error_and_the_pool_recovers() -> None:
    killer = cluster(executor="process")(lambda: os._exit(9))
    with pytest.raises(JobError, match=r"killed its worker process.*exit code 9"):
        killer()
    assert square(3) == 9


def test_a_decorated_function_sent_to_a_worker_runs_there_instead_of_resubmitting() -> None:
    import cloudpickle

    from clustrix.remote.runner import execute_call

    # a @cluster function that reaches a worker (e.g. passed as an argument) is unwrapped
    ok, encoded = execute_call(pickle.loads(cloudpickle.dumps(square)), (6,), {})
    assert ok
    assert pickle.loads(pickle.loads(encoded)["value"]) == 36


@pytest.mark.parametrize("how", ["path", "module"])
def test_a_script_without_a_main_guard_runs_in_processes_once(tmp_path: Path, how: str) -> None:
    # spawned workers would re-run it: by its path, or under ``python -m`` by its module name
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            from clustrix import cluster

            @cluster(executor="process")
            def worker_pid(_):
                return os.getpid()

            pids = worker_pid.map(range(8))
            print("ran", len(pids), os.getpid() not in pids)
            """
        )
    )
    command = [sys.executable, str(script)] if how == "path" else [sys.executable, "-m", "unguarded"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ran 8 True"


def test_a_function_whose_source_cannot_be_read_back_still_runs_in_a_process(tmp_path: Path) -> None:
    # exec'd code whose file name points at another file: inspect reads lines that are not its source
    # (Python 3.12+ raises tokenize.TokenError there, not OSError)
    other = tmp_path / "notes.txt"
    other.write_text('x = "unterminated\n' * 5)
    namespace: dict[str, object] = {}
    exec(compile("def double(x):\n    return 2 * x\n", str(other), "exec"), namespace)
    assert cluster(namespace["double"]).map(range(3)) == [0, 2, 4]  # type: ignore[arg-type]


def test_a_maps_arguments_pickle_as_plain_pairs_so_a_remote_runner_needs_no_clustrix_class() -> None:
    from clustrix.api.decorator import _mapped_arguments

    arguments = _mapped_arguments(([1, 2], ["a", "b"]))
    assert list(arguments) == [((1, "a"), {}), ((2, "b"), {})]
    restored = pickle.loads(pickle.dumps(arguments))
    assert type(restored) is list and restored == [((1, "a"), {}), ((2, "b"), {})]
