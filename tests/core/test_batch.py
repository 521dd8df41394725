"""The batch engine without a scheduler: dialect defaults, status combination, the poll and submit scripts."""

from __future__ import annotations

import ast
import io
import os
import subprocess
import tokenize
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clustrix.batch import shell
from clustrix.batch.dialect import Dialect, ScriptJob, TaskRecord, expand_task_ids
from clustrix.batch.reports import parse_report
from clustrix.batch.status import JobFiles, as_cancelled, call_counts, job_status, status_from_files
from clustrix.config.resources import Resources
from clustrix.plugin.transport import LocalTransport
from clustrix.plugin.types import JobState
from clustrix.remote import runner
from clustrix.remote.report import run_script_bytes

ROOT = Path(__file__).resolve().parents[2]


class OneBased(Dialect):
    """A dialect shaped like SGE's: 1-based arrays, a few states, one declared extra."""

    name = "onebased"
    label = "OneBased"
    task_index_variable = "SGE_TASK_ID"
    first_task_index = 1
    extras = {"project": "the project charged"}
    unsupported = frozenset({"gpus"})
    states = {"QW": JobState.PENDING, "R": JobState.RUNNING, "DONE": JobState.COMPLETED, "EQW": JobState.FAILED}

    def never_runnable(self, record: TaskRecord) -> str | None:
        return "its queue is disabled" if record.reason == "disabled" else None

    # the required methods these tests never reach (a dialect must have them to be created)
    def directives(self, job: ScriptJob) -> list[str]:
        raise NotImplementedError

    def submit_argv(self, script_path: str, job: ScriptJob) -> list[str]:
        raise NotImplementedError

    def parse_submit(self, stdout: str) -> str:
        raise NotImplementedError

    def status_argv(self, native_ids: Sequence[str]) -> list[str]:
        raise NotImplementedError

    def parse_status(self, stdout: str) -> list[TaskRecord]:
        raise NotImplementedError

    def cancel_argv(self, native_id: str) -> list[str]:
        raise NotImplementedError

    def log_name(self, native_id: str, task: int, stream: str) -> str:
        raise NotImplementedError


def job(**changes: object) -> ScriptJob:
    values: dict[str, object] = {
        "job_id": "20250101-000000-abcdefabcdef",
        "name": "f",
        "job_dir": "/w/j",
        "n_tasks": 3,
        "n_calls": 3,
        "resources": Resources(),
        "python": "/py",
        "runner_path": "/w/j/clustrix_runner.py",
    }
    values.update(changes)
    return ScriptJob(**values)  # type: ignore[arg-type]


def test_a_one_based_task_index_reaches_the_runner_as_zero_based_and_a_plain_job_runs_task_zero() -> None:
    line = OneBased().runner_line(job())
    for env, expected in (({"SGE_TASK_ID": "3"}, "2"), ({}, "0")):
        shown = subprocess.run(
            ["bash", "-c", "set -- " + line.split(" ", 3)[3] + '; printf %s "$2"'],
            env={"PATH": os.environ["PATH"], **env},
            capture_output=True,
            text=True,
            check=True,
        )
        assert shown.stdout == expected


def test_validation_names_unknown_extras_and_unsupported_resources() -> None:
    dialect = OneBased()
    dialect.validate(Resources.parse(project="p"))
    with pytest.raises(ValueError, match=r"'acount'.*its options are: project"):
        dialect.validate(Resources.parse(acount="x"))
    with pytest.raises(ValueError, match="gpus=2: OneBased cannot limit gpus"):
        dialect.validate(Resources.parse(gpus=2))


def test_records_in_native_numbering_map_to_engine_tasks_and_a_whole_array_line_fills_the_rest() -> None:
    dialect = OneBased()
    records = [TaskRecord("7", (1,), "DONE"), TaskRecord("7", None, "qw")]
    status = job_status(dialect, records, 3, {0: 0})
    assert status is not None and status.state is JobState.PENDING
    never = job_status(dialect, [TaskRecord("7", None, "qw", reason="disabled")], 2, {})
    assert never is not None and never.state is JobState.FAILED
    assert never.reason == "OneBased will never start this job: its queue is disabled"


def test_files_win_and_a_cancelled_job_ends_cancelled_whatever_the_scheduler_calls_it() -> None:
    assert status_from_files(JobFiles(outcomes=3), 1, 3).state is JobState.COMPLETED  # type: ignore[union-attr]
    assert status_from_files(JobFiles(exits={0: 0, 1: 1}), 2, 5).state is JobState.FAILED  # type: ignore[union-attr]
    assert status_from_files(JobFiles(exits={0: 0}), 2, 5) is None
    failed = job_status(OneBased(), [TaskRecord("7", None, "EQW")], 1, {})
    cancelled = as_cancelled(failed, JobFiles(cancelled=True))
    assert cancelled is not None and cancelled.state is JobState.CANCELLED
    assert as_cancelled(None, JobFiles(cancelled=True)).state is JobState.CANCELLED  # type: ignore[union-attr]


def test_task_id_lists_expand_with_ranges_throttles_and_steps() -> None:
    assert expand_task_ids("[1-3%2]") == (1, 2, 3)
    assert expand_task_ids("1-9:4") == (1, 5, 9)


def test_one_poll_command_reports_the_query_the_files_and_inlines_finished_outcomes(tmp_path: Path) -> None:
    done, running = tmp_path / "done", tmp_path / "running"
    for directory in (done, running):
        (directory / runner.OUT_DIR).mkdir(parents=True, mode=0o700)
        directory.chmod(0o700)
    tmp_path.chmod(0o700)
    runner.write_atomic(done / runner.outcome_name(0), runner.encode_outcome_ok(42))
    runner.write_atomic(done / runner.exit_name(0), b"0\n")
    runner.write_atomic(running / runner.exit_name(1), b"1\n")
    (running / shell.CANCELLED).touch()
    jobs = [
        shell.PollJob(job_id="done", job_dir=str(done), n_tasks=1, n_calls=1, sweep="true"),
        shell.PollJob(job_id="running", job_dir=str(running), n_tasks=2, n_calls=2),
    ]
    script = shell.render_poll(jobs, status="printf '7|R\\n'; echo oops >&2; false", marker="m")
    _code, out, _err = run_script_bytes(LocalTransport(), script)
    report = parse_report(out, "m", {"done", "running"})
    assert report.query is not None
    assert (report.query.stdout.strip(), report.query.returncode, report.query.stderr) == ("7|R", 1, "oops\n")
    assert report.files["running"] == JobFiles(exits={1: 1}, outcomes=0, cancelled=True)
    assert report.files["done"].outcomes == 1 and report.swept == {"done"}
    from clustrix.remote.jobdir import decode_outcome

    assert decode_outcome(report.outcomes["done"][0]).value == 42
    assert "running" not in report.outcomes


def test_a_watch_waits_on_the_target_until_the_files_are_complete_or_the_job_is_gone(tmp_path: Path) -> None:
    import threading
    import time

    job = tmp_path / "job"
    (job / runner.OUT_DIR).mkdir(parents=True, mode=0o700)
    job.chmod(0o700)
    tmp_path.chmod(0o700)
    poll_job = shell.PollJob(job_id="job", job_dir=str(job), n_tasks=1, n_calls=1)

    def watch(alive: str) -> tuple[float, bytes]:
        wait = shell.Wait(alive=alive, seconds=120)  # far above any time the test waits, even on a loaded machine
        started = time.monotonic()
        _code, out, _err = run_script_bytes(
            LocalTransport(), shell.render_poll([poll_job], status="true", marker="m", wait=wait)
        )
        return time.monotonic() - started, out

    elapsed, out = watch("false")  # the job is gone: the watch stops at its first liveness check
    assert elapsed < 60 and parse_report(out, "m", {"job"}).files["job"].exits == {}

    def finish() -> None:
        time.sleep(0.7)  # past the first half second of 10 ms looks
        runner.write_atomic(job / runner.outcome_name(0), runner.encode_outcome_ok(7))
        runner.write_atomic(job / runner.exit_name(0), b"0\n")

    writer = threading.Thread(target=finish)
    writer.start()
    elapsed, out = watch("true")  # alive: the watch returns when the files are complete, outcomes inline
    writer.join()
    report = parse_report(out, "m", {"job"})
    # complete means every call's outcome or every task's exit file: the watch may return between the
    # runner's two writes (outcome first), so the exit file may or may not be in this round's report
    assert 0.7 <= elapsed < 60 and report.files["job"].exits in ({}, {0: 0})
    from clustrix.remote.jobdir import decode_outcome

    assert decode_outcome(report.outcomes["job"][0]).value == 7


def test_a_never_runnable_job_is_a_structured_signal_not_a_message() -> None:
    from clustrix.batch.status import never_runnable

    dialect = OneBased()
    pending = [TaskRecord("1", None, "qw", reason="disabled")]
    status = never_runnable(dialect, pending, 2, {})
    assert status is not None and status.state is JobState.FAILED and "queue is disabled" in (status.reason or "")
    assert job_status(dialect, pending, 2, {}) == status
    assert never_runnable(dialect, [TaskRecord("1", None, "qw", reason="priority")], 2, {}) is None
    assert never_runnable(dialect, pending, 2, {0: 0, 1: 0}) is None  # every task finished: nothing to cancel


def test_a_submit_on_a_full_file_system_stops_with_the_path_before_the_scheduler_is_called(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    files = [shell.StagedFile(name="payload.pkl", size=10)]
    script = shell.render_submit(
        base_dir=str(tmp_path), job_dir=str(tmp_path / "j"), files=files, submit="echo submitted", marker="m"
    )
    code, out, err = run_script_bytes(LocalTransport(), script, b"short")  # 5 of 10 bytes arrive
    assert code == shell.WRITE_FAILED_EXIT
    assert f"cannot write {tmp_path / 'j' / 'payload.pkl'} (10 bytes)" in err.decode()
    assert b"submitted" not in out


def code_lines(path: Path) -> int:
    """Lines holding code: no blank lines, comments or docstrings."""
    source = path.read_text()
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                docstrings.update(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
    lines = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            continue
        if token.type == tokenize.ENDMARKER:
            continue
        lines.update(line for line in range(token.start[0], token.end[0] + 1) if line not in docstrings)
    return len(lines)


def test_the_task_spooler_reference_plugin_is_at_most_80_lines_of_code() -> None:
    plugin = ROOT / "tests" / "plugins" / "clustrix-tsp" / "src" / "clustrix_tsp.py"
    assert code_lines(plugin) <= 80


class Unreachable(OneBased):
    """A scheduler whose controller does not answer (a restart in progress)."""

    def status_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["sh", "-c", "echo 'error: Unable to contact the controller' >&2; exit 1"]


def test_a_status_query_that_fails_leaves_open_jobs_unknown_and_finished_ones_still_finish(tmp_path: Path) -> None:
    from clustrix.batch.engine import BatchScheduler
    from clustrix.plugin.types import JobHandle

    tmp_path.chmod(0o700)
    handles = []
    for name, finished in (("over", True), ("open", False)):
        directory = tmp_path / name
        (directory / runner.OUT_DIR).mkdir(parents=True, mode=0o700)
        directory.chmod(0o700)
        if finished:
            runner.write_atomic(directory / runner.outcome_name(0), runner.encode_outcome_ok("ok"))
        handles.append(JobHandle(job_id=name, scheduler="onebased", native_id="1", job_dir=str(directory)))
    scheduler = BatchScheduler(Unreachable(), transport_factory=lambda _config: LocalTransport())
    statuses = scheduler.clustrix_poll(handles=handles, config=None)
    assert statuses["over"].state is JobState.COMPLETED
    assert "open" not in statuses  # asked again next round, no lost-job timer started
    assert [o.value for o in scheduler.clustrix_fetch(handle=handles[0], config=None)] == ["ok"]  # type: ignore[union-attr]


def _job_dir_with_calls(directory: Path, *, ok: Sequence[int], raised: Sequence[int], claimed: Sequence[int]) -> str:
    """A job directory as the runner leaves it: outcomes (a ``.failed`` marker first for a raise) and claims."""
    (directory / runner.OUT_DIR).mkdir(parents=True, mode=0o700)
    directory.chmod(0o700)
    for index in (*ok, *raised, *claimed):
        runner.write_atomic(directory / runner.claim_name(index), b"0\nhost 1\n")
    for index in ok:
        runner.write_atomic(directory / runner.outcome_name(index), runner.encode_outcome_ok(index))
    for index in raised:
        runner.write_atomic(directory / runner.failed_name(index), b"")
        runner.write_atomic(directory / runner.outcome_name(index), runner.encode_outcome_error(ValueError(index)))
    return str(directory)


class Listed(OneBased):
    """A OneBased scheduler whose status query lists job 7: native tasks 1-2 running, 3-8 queued."""

    def status_argv(self, native_ids: Sequence[str]) -> list[str]:
        return ["printf", "7 1-2 R\\n7 3-8 QW\\n"]

    def parse_status(self, stdout: str) -> list[TaskRecord]:
        return [TaskRecord(w[0], expand_task_ids(w[1]), w[2]) for w in (line.split() for line in stdout.splitlines())]


def test_a_poll_counts_each_call_done_failed_running_or_pending_from_one_command(tmp_path: Path) -> None:
    from clustrix.batch.engine import BatchScheduler
    from clustrix.plugin.types import JobHandle

    tmp_path.chmod(0o700)
    job_dir = _job_dir_with_calls(tmp_path / "job", ok=[0, 1, 2], raised=[5], claimed=[3, 4, 6])
    handle = JobHandle(job_id="job", scheduler="onebased", size=10, native_id="7", job_dir=job_dir, data={"tasks": 8})
    commands: list[Sequence[str]] = []

    class Counting(LocalTransport):
        def execute(self, argv: Sequence[str], **kwargs: object) -> tuple[int, bytes, bytes]:  # run(), run_bytes()
            commands.append(argv)
            return super().execute(argv, **kwargs)  # type: ignore[arg-type]

    scheduler = BatchScheduler(Listed(), transport_factory=lambda _config: Counting())
    status = scheduler.clustrix_poll(handles=[handle], config=None)["job"]
    assert status.state is JobState.RUNNING
    # three claimed calls have no outcome, but the scheduler runs only two tasks: the third is pending again
    assert status.counts == {"done": 3, "failed": 1, "running": 2, "pending": 4}
    assert len(commands) == 1


def test_the_poll_reads_outcomes_failures_and_claims_as_counts_not_lists(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    job_dir = _job_dir_with_calls(tmp_path / "job", ok=[0, 1], raised=[2, 3], claimed=[4])
    script = shell.render_poll(
        [shell.PollJob(job_id="j", job_dir=job_dir, n_tasks=5, n_calls=6)], status=None, marker="m"
    )
    _code, out, _err = run_script_bytes(LocalTransport(), script)
    files = parse_report(out, "m", {"j"}).files["j"]
    assert (files.outcomes, files.failed_outcomes, files.claims) == (4, 2, 5)
    assert call_counts(files, 6) == {"done": 2, "failed": 2, "running": 1, "pending": 1}
    assert call_counts(files, 6, final=True) == {"done": 2, "failed": 4, "running": 0, "pending": 0}


@given(
    outcomes=st.integers(-2, 30),
    failed=st.integers(-2, 30),
    claims=st.integers(-2, 40),
    tasks=st.none() | st.integers(-2, 20),
    calls=st.integers(0, 25),
    final=st.booleans(),
)
def test_call_counts_always_add_up_to_the_number_of_calls_whatever_the_files_say(
    outcomes: int, failed: int, claims: int, tasks: int | None, calls: int, final: bool
) -> None:
    files = JobFiles(outcomes=outcomes, failed_outcomes=failed, claims=claims)
    counts = call_counts(files, calls, running_tasks=tasks, final=final)
    assert sum(counts.values()) == calls
    assert all(value >= 0 for value in counts.values())
    if tasks is not None and tasks >= 0:
        assert counts["running"] <= tasks
