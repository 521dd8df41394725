"""The remote runner: ``python -m clustrix.remote.runner JOBDIR [--task N]``.

It loads the cloudpickled payload of a job directory, runs the calls assigned to one
array task, and writes each call's outcome atomically, then an exit-code side file.
It imports only the standard library and cloudpickle, so it can also be shipped as a
single file next to the payload and run with any Python that has cloudpickle.

Job directory layout (shared by every batch scheduler plugin)::

    JOBDIR/                 0700, owned by the submitting user
      payload.pkl           {"func", "arguments", "tasks", "claim", "retries"}; cloudpickled
      out/<index>.pkl       one outcome per call index, written atomically
      out/<index>.failed    empty marker, made before the outcome of a call that raised
      out/<index>.claim     (claim mode) which array task runs the call: "<task>\\n<host pid>"
      out/<index>.ckpt      (checkpoints) the call to run instead: cloudpickled (func, args, kwargs)
      out/task-<N>.exit     the runner's exit code for array task N
      stdout / stderr       (names chosen by the scheduler plugin)

``tasks`` lists, for each array task, the call indices it runs (several tiny calls
may be packed into one task). An outcome file holds a plain pickled dict:
``{"ok": True, "value": <cloudpickle bytes>}`` or ``{"ok": False, "exception":
<cloudpickle bytes or None>, "type": "mod.Name", "message": str, "traceback": str}``, with
``"attempts": n`` when the call ran more than once.

**Retries** (``"retries": N``): a call that raised runs again at once in its task, up to N more
times (:func:`execute_with_retries`); the client resubmits calls that were lost (:mod:`clustrix.api.retry`).

**Claim mode** (``"claim": True``, dynamic packing): ``tasks[N]`` is only task N's own
share. Each call is taken by creating ``out/<index>.claim`` exclusively; a task runs its
own share first and then steals every call nobody has claimed, so whichever tasks the
scheduler starts first do all the work, and tasks that start later find nothing left and
exit at once. A call whose outcome exists is never run again, and a claim made by this
same array task in an earlier run (it was requeued or preempted) is taken over, so a
restarted task is an idempotent re-run.

**Nested calls**: while calls run, ``CLUSTRIX_INSIDE_CALL=job`` is set, so a ``@cluster``
function that a call calls runs inline, inside this job, instead of submitting another
(unless its configuration says ``nested_calls="submit"``; see :mod:`clustrix.api.decorator`).

**Checkpoints and requeue**: when ``CLUSTRIX_REQUEUE_ARGV`` (a JSON argv, e.g.
``["scontrol", "requeue", "123_4"]``) is set, ``SIGUSR2`` asks the task to stop and come
back. If the running call's callable has a ``checkpoint(*args, **kwargs)`` method, it is
called; it returns the call to run on restart, as a ``(func, args, kwargs)`` tuple or an
object with ``function`` (or ``func``), ``args`` and ``kwargs`` attributes (submitit's
``DelayedSubmission`` fits), or None for "no checkpoint". The new call is written to
``out/<index>.ckpt`` atomically, the requeue argv is run, and the runner exits without an
exit-code file. Without a checkpoint the running call is left to finish, and the task then
requeues itself if it has calls left, instead of starting one it may not finish.

**A cancelled job** (clustrix's cancel leaves the marker :data:`CANCELLED` in the job directory
before it asks the scheduler) ends at the warning signal at once, with or without a
checkpoint: the kill that follows the warning would end it anyway, and ending now frees the
slot at once instead of after the queue's notify time (SGE, ``-notify``).

**A scheduler that stops the task itself** (PBS: ``qdel``, ``qrerun``, preemption and the
walltime all send ``SIGTERM``, then ``SIGKILL`` after the queue's ``kill_delay``) names its
warning signal in ``CLUSTRIX_CHECKPOINT_SIGNAL`` (``TERM``) and gives no requeue argv. On
that signal the running call's checkpoint is saved as above, and the runner then ends as
the signal would have ended it, without an exit-code file: whether the task comes back
(rerun, resuming from the checkpoint) or is gone (deleted, out of time) is the
scheduler's decision, and it reports the end as it always does (PBS: 256+15 after qdel).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Sequence
from typing import Any

PAYLOAD = "payload.pkl"
OUT_DIR = "out"
#: The marker a cancel by clustrix leaves in the job directory before it asks the scheduler to
#: stop the job: a warning signal that comes after it ends the task at once (nothing is kept).
CANCELLED = "cancelled"
#: The environment variable holding the JSON argv that requeues this array task.
REQUEUE_ENV = "CLUSTRIX_REQUEUE_ARGV"
#: The runner's exit code after it asked to be requeued (no exit-code file is written).
REQUEUED_EXIT = 75
#: The environment variable naming the signal a scheduler warns a task with before stopping it
#: (``TERM``); unset: ``USR2``, acted on only when :data:`REQUEUE_ENV` is set.
SIGNAL_ENV = "CLUSTRIX_CHECKPOINT_SIGNAL"
DEFAULT_CHECKPOINT_SIGNAL = "USR2"
#: Set while calls run: ``job`` in a job this runner runs, ``local`` in a worker of the local
#: executor. A ``@cluster`` function called there runs inline (``nested_calls``); inherited by
#: the programs a call starts.
INSIDE_ENV = "CLUSTRIX_INSIDE_CALL"


def outcome_name(index: int) -> str:
    return f"{OUT_DIR}/{index}.pkl"


def failed_name(index: int) -> str:
    return f"{OUT_DIR}/{index}.failed"


def claim_name(index: int) -> str:
    return f"{OUT_DIR}/{index}.claim"


def checkpoint_name(index: int) -> str:
    return f"{OUT_DIR}/{index}.ckpt"


def exit_name(task: int) -> str:
    return f"{OUT_DIR}/task-{task}.exit"


try:  # installed: core's error, a ClustrixError the client catches
    from clustrix.errors import UnsafePathError
except ImportError:  # shipped alone next to the payload: the standard library and cloudpickle only

    class UnsafePathError(PermissionError):  # type: ignore[no-redef]
        """A file to be unpickled could have been written by another user."""


def check_private(path: str, st: os.stat_result | None = None, *, uid: int | None = None) -> None:
    """Refuse ``path`` unless it is no symbolic link, owned by ``uid`` (default: us) and not group/other-writable."""
    st = os.lstat(path) if st is None else st
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(f"{path} is a symbolic link: refusing to unpickle it")
    expected = os.getuid() if uid is None else uid
    if st.st_uid != expected:
        raise UnsafePathError(f"{path} is owned by uid {st.st_uid}, not {expected}: refusing to unpickle it")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafePathError(f"{path} is writable by other users: refusing to unpickle it")


def open_private(path: str) -> Any:
    """Open ``path`` for reading without following a symbolic link, and check the file opened (fstat)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafePathError(f"{path} is a symbolic link: refusing to unpickle it") from exc
        raise
    try:
        check_private(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


#: The file name cloudpickle (3.1.3 and later) gives every code object it pickles by value,
#: so that payloads do not depend on where code was defined.
DYNAMIC_CODE = "<dynamic-code>"
_pickler_class: Any = None


def _pickler() -> Any:
    """A cloudpickle Pickler that keeps each code object's real file name.

    Functions decorated with ``@cluster`` always travel by value (their module attribute is
    the wrapper), so without this a traceback from the job names ``<dynamic-code>`` instead
    of the user's file, and shows no source line even where the file exists.
    """
    global _pickler_class
    if _pickler_class is None:
        import cloudpickle

        class KeepFilenames(cloudpickle.Pickler):
            def reducer_override(self, obj: Any) -> Any:
                if type(obj) is types.CodeType:
                    reduce = self.dispatch_table.get(types.CodeType)
                    if reduce is not None:
                        constructor, args = reduce(obj)
                        kept = (obj.co_filename if isinstance(a, str) and a == DYNAMIC_CODE else a for a in args)
                        return constructor, tuple(kept)
                return super().reducer_override(obj)

        _pickler_class = KeepFilenames
    return _pickler_class


def dumps(obj: Any) -> bytes:
    """cloudpickle ``obj`` (highest protocol), keeping code objects' file names."""
    buffer = io.BytesIO()
    _pickler()(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def type_name(exc: BaseException) -> str:
    """``module.QualName`` of an exception's class, as outcome records name it."""
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


def encode_outcome_ok(value: Any) -> bytes:
    return pickle.dumps({"ok": True, "value": dumps(value)}, protocol=pickle.HIGHEST_PROTOCOL)


def encode_outcome_error(exc: BaseException) -> bytes:
    tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        exc_bytes: bytes | None = dumps(exc)
    except Exception:  # noqa: BLE001 - an unpicklable exception still travels as type, message, traceback
        exc_bytes = None
    record = {"ok": False, "exception": exc_bytes, "type": type_name(exc), "message": str(exc), "traceback": tb_text}
    return pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)


def unwrap(func: Any) -> Any:
    """The plain function behind a ``@cluster`` function.

    A module-level function is pickled by reference; unpickled here it is the module's
    attribute, which is the decorated wrapper: calling that would submit the job again.
    """
    while getattr(func, "__clustrix_function__", False):
        func = func.__wrapped__
    return func


def execute_call(func: Any, args: Any, kwargs: Any) -> tuple[bool, bytes]:
    """Run one call; return whether it succeeded and its encoded outcome.

    Every exception of the call itself (``SystemExit`` included) becomes an outcome;
    only ``KeyboardInterrupt`` propagates, so a signalled runner still stops.
    """
    func = unwrap(func)
    try:
        value = func(*args, **kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - the point is to carry every failure home
        return False, encode_outcome_error(exc)
    try:
        return True, encode_outcome_ok(value)
    except Exception as exc:  # noqa: BLE001 - an unpicklable result is the call's failure
        error = TypeError(f"the function's return value could not be pickled: {type(exc).__name__}: {exc}")
        return False, encode_outcome_error(error)


# ---- retries: a call that raised runs again in its own task (``retries`` of the payload) ----------
#: Failures a call is not run again for in its task: the same limit would end it again, or it asked to end.
NOT_RETRIED = ("builtins.MemoryError", "builtins.SystemExit")


def execute_with_retries(
    func: Any, args: Any, kwargs: Any, retries: int, index: int, may_retry: Any = lambda: True
) -> tuple[bool, bytes]:
    """:func:`execute_call`, run again while it raises, up to ``retries`` more times.

    The outcome of a call that ran more than once records ``attempts``; a failure's traceback
    text ends with how many attempts raised. Not run again: :data:`NOT_RETRIED`, or when
    ``may_retry()`` says no (the task must stop, the job was cancelled).
    """
    attempt = 1
    ok, encoded = execute_call(func, args, kwargs)
    while not ok and attempt <= retries:
        record = pickle.loads(encoded)
        if record["type"] in NOT_RETRIED or not may_retry():
            break
        said = f"call {index} raised {record['type']}: {record['message']} (attempt {attempt} of {retries + 1})"
        print(f"clustrix.remote.runner: {said}; running it again", file=sys.stderr, flush=True)
        attempt += 1
        ok, encoded = execute_call(func, args, kwargs)
    if attempt == 1:
        return ok, encoded
    record = pickle.loads(encoded)
    record["attempts"] = attempt
    if not ok:
        record["traceback"] += f"\n(clustrix: the call raised on {attempt} attempts; retries={retries})\n"
    return ok, pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so that readers see either nothing or the whole file (0600 by default)."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def as_call(value: Any) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """What ``checkpoint()`` returned, as ``(func, args, kwargs)``.

    Accepts a 3-tuple, or an object with ``function``/``func``, ``args`` and ``kwargs``.
    """
    if isinstance(value, (tuple, list)) and len(value) == 3:
        func, args, kwargs = value
    else:
        func = getattr(value, "function", None) or getattr(value, "func", None)
        args, kwargs = getattr(value, "args", None), getattr(value, "kwargs", None)
        if func is None or args is None or kwargs is None:
            raise TypeError(
                f"checkpoint() returned {type(value).__name__}; return (func, args, kwargs) "
                "or an object with function, args and kwargs attributes"
            )
    if not callable(func):
        raise TypeError(f"checkpoint() returned {func!r} as the function to resume, which is not callable")
    return func, tuple(args), dict(kwargs)


def call_order(n_calls: int, own: Sequence[int]) -> list[int]:
    """The order a claiming task tries calls in: its own share, then the others from after it."""
    seen = set(own)
    start = (max(own) + 1) if own else 0
    rest = [(start + k) % n_calls for k in range(n_calls)] if n_calls else []
    return [*own, *(i for i in rest if i not in seen)]


# ---- inputs: upstream results read on the cluster (futures passed as arguments) -----------------
#: A one-key dict ``{UPSTREAM: {"job", "dir", "index", "tasks", "wait", "held"}}`` in a call's arguments
#: (in lists, tuples and dicts) stands for the result of call ``index`` of the job in ``dir``.
UPSTREAM = "__clustrix_upstream__"
#: Set (to 1) in a job no scheduler holds for its inputs (the plain ssh backend): each waits until its upstream is over.
INPUTS_WAIT_ENV = "CLUSTRIX_INPUTS_WAIT"

try:
    from clustrix.errors import DependencyError
except ImportError:  # shipped alone: the client reads the record's "upstream" part, not this class

    class DependencyError(RuntimeError):  # type: ignore[no-redef]
        """An input of the call failed or is gone."""


def with_inputs(args: Any, kwargs: Any) -> tuple[Any, Any] | bytes:
    """``(args, kwargs)`` with every upstream placeholder replaced by its value, or the call's failed outcome."""
    try:
        return resolve_inputs(args), resolve_inputs(kwargs)
    except DependencyError as exc:
        record = pickle.loads(encode_outcome_error(exc))
        record["upstream"] = getattr(exc, "upstream", None)
        return pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)


def resolve_inputs(obj: Any, read: Any = None) -> Any:
    """``obj`` with every placeholder ``ref`` replaced by ``read(ref)`` (default :func:`read_upstream`)."""
    kind, read = type(obj), read or read_upstream
    if kind is dict and len(obj) == 1 and UPSTREAM in obj:
        return read(obj[UPSTREAM])
    if kind is list or kind is tuple:
        return kind(resolve_inputs(item, read) for item in obj)
    return {k: resolve_inputs(v, read) for k, v in obj.items()} if kind is dict else obj


def inputs_ready(arguments: Any) -> bool:
    """Whether every upstream result ``arguments`` stand for has its outcome file (a call another task may take)."""
    refs: list[dict[str, Any]] = []
    resolve_inputs(arguments, refs.append)
    return all(os.path.exists(os.path.join(r["dir"], outcome_name(int(r["index"])))) for r in refs)


def read_upstream(ref: dict[str, Any]) -> Any:
    """The value of an upstream call, from its outcome file (checked as every outcome); DependencyError if none.

    It waits while the call may still write it: a task of the upstream holds its claim and has not ended
    (``held``: the scheduler started us after the upstream), or the upstream is not over (not held:
    no scheduler dependency), at most ``wait`` seconds when given.
    """
    job_dir, index, delay, start = ref["dir"], int(ref["index"]), 0.05, time.monotonic()
    path, record = os.path.join(job_dir, outcome_name(index)), None
    while record is None:
        try:
            check_private(job_dir)
            with open_private(path) as fh:
                record = pickle.load(fh)
            break
        except FileNotFoundError:
            pass
        ended = [os.path.exists(os.path.join(job_dir, exit_name(t))) for t in range(int(ref["tasks"]))]
        over = all(ended) or os.path.exists(os.path.join(job_dir, CANCELLED)) or not os.path.isdir(job_dir)
        if ref.get("held") and not os.environ.get(INPUTS_WAIT_ENV) and not over:
            try:
                with open(os.path.join(job_dir, claim_name(index)), encoding="utf-8") as fh:
                    holder = fh.readline().strip()
                over = holder.isdigit() and ended[int(holder)]
            except (OSError, IndexError):
                over = True  # nobody took the call, and the upstream task that owns it has ended
        late = ref.get("wait") is not None and time.monotonic() - start > ref["wait"]
        if (over or late) and not os.path.exists(path):
            raise unmet(f"its input, call {index} of job {ref['job']}, wrote no result", ref, None)
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)
    if record.get("ok"):
        return pickle.loads(record["value"])
    message = f"its input, call {index} of job {ref['job']}, failed: {record.get('type')}: {record.get('message')}"
    raise unmet(message, ref, record)


def unmet(message: str, ref: dict[str, Any], record: dict[str, Any] | None) -> BaseException:
    exc = DependencyError(message)
    exc.upstream = {"job": ref["job"], "index": int(ref["index"]), "record": record}  # type: ignore[attr-defined]
    return exc


class _TaskRun:
    """One run of one array task: the calls it takes, and what the warning signal makes it do."""

    def __init__(self, job_dir: str, task: int, payload: dict[str, Any]) -> None:
        self.job_dir = job_dir
        self.task = task
        self.func = payload["func"]
        self.arguments = payload["arguments"]
        self.tasks = payload.get("tasks") or [list(range(len(self.arguments)))]
        self.claim = bool(payload.get("claim"))
        self.inputs = bool(payload.get("inputs"))  # some arguments are upstream results (see with_inputs)
        self.retries = int(payload.get("retries") or 0)
        self.owner = str(task)
        self.current: tuple[int, Any, Any, Any] | None = None
        self.stop_requested = False
        self.requeue_argv: list[str] | None = None

    def path(self, name: str) -> str:
        return os.path.join(self.job_dir, name)

    # ---- claims -----------------------------------------------------------
    def try_claim(self, index: int) -> bool:
        """Take call ``index`` unless it is done or another task has it; our own old claim is ours."""
        if os.path.exists(self.path(outcome_name(index))):
            return False
        claim = self.path(claim_name(index))
        try:
            fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            try:
                with open(claim, encoding="utf-8", errors="replace") as fh:
                    holder = fh.readline().strip()
            except FileNotFoundError:
                return False
            if holder != self.owner:
                return False  # a task we cannot see runs it (or ran it and was not requeued)
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{self.owner}\n{socket.gethostname()} {os.getpid()}\n")
        # an earlier run of this task may have finished it just before being stopped
        return not os.path.exists(self.path(outcome_name(index)))

    def indices(self) -> list[int]:
        own = list(self.tasks[self.task])
        # a call whose outcome exists (a requeued or restarted task) is never run again
        done = {name[: -len(".pkl")] for name in os.listdir(self.path(OUT_DIR)) if name.endswith(".pkl")}
        order = call_order(len(self.arguments), own) if self.claim else own
        return [i for i in order if str(i) not in done]

    # ---- running ----------------------------------------------------------
    def run(self) -> int:
        failed, own = False, set(self.tasks[self.task])
        for index in self.indices():
            if self.stop_requested:
                self.requeue_and_exit()
            # another task's call is taken once its inputs are there (its own task is held for them, not us)
            stolen = index not in own
            waiting = stolen and self.inputs and not inputs_ready(self.arguments[index])
            if self.claim and (waiting or not self.try_claim(index)):
                continue
            # a task exits 1 for its own calls only: SLURM holds an element-wise dependant task by task
            failed = (not self.run_call(index) and not stolen) or failed
        code = 1 if failed else 0
        write_atomic(self.path(exit_name(self.task)), f"{code}\n".encode())
        return code

    def run_call(self, index: int) -> bool:
        func = self.func
        args, kwargs = self.arguments[index]
        checkpoint = self.path(checkpoint_name(index))
        if os.path.lexists(checkpoint):
            with open_private(checkpoint) as fh:
                func, args, kwargs = pickle.load(fh)
            print(f"clustrix.remote.runner: call {index} resumes from its checkpoint", file=sys.stderr, flush=True)
        self.current = (index, func, args, kwargs)
        try:
            inputs = with_inputs(args, kwargs) if self.inputs else (args, kwargs)
            if isinstance(inputs, bytes):  # an input failed: its DependencyError, never retried
                ok, encoded = False, inputs
            else:
                ok, encoded = execute_with_retries(func, *inputs, self.retries, index, self.may_retry)
        finally:
            self.current = None
        if not ok:
            write_atomic(self.path(failed_name(index)), b"")
        write_atomic(self.path(outcome_name(index)), encoded)
        if os.path.exists(checkpoint):
            os.unlink(checkpoint)
        return ok

    def may_retry(self) -> bool:
        """A call that raised may run again unless the task was asked to stop or the job was cancelled."""
        return not self.stop_requested and not os.path.exists(self.path(CANCELLED))

    # ---- the warning signal: checkpoint, requeue ---------------------------
    def install_signal_handler(self) -> None:
        text, name = os.environ.get(REQUEUE_ENV), os.environ.get(SIGNAL_ENV)
        if not text and not name:
            return
        if text:
            argv = json.loads(text)
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                raise SystemExit(f"clustrix.remote.runner: {REQUEUE_ENV} must be a JSON list of strings, not {text!r}")
            self.requeue_argv = argv
        signal.signal(checkpoint_signal(name or DEFAULT_CHECKPOINT_SIGNAL), self.on_signal)

    def on_signal(self, signum: int, frame: Any) -> None:
        if os.path.exists(self.path(CANCELLED)):
            # cancelled: the scheduler's warning (SGE's -notify SIGUSR2, PBS's TERM) comes before a kill
            # that nothing survives; end now, so the job leaves the queue at once, not after the notify time
            print(
                "clustrix.remote.runner: the job was cancelled; the running call ends now", file=sys.stderr, flush=True
            )
            end_by_signal(signum)
        current = self.current
        resumed = None if current is None else self.checkpoint(current)
        if resumed is not None and current is not None:
            write_atomic(self.path(checkpoint_name(current[0])), dumps(resumed))
            print(f"clustrix.remote.runner: call {current[0]} checkpointed", file=sys.stderr, flush=True)
        if self.requeue_argv is None:
            end_by_signal(signum)  # the scheduler stops the task itself, then reruns or deletes it
        if resumed is None:
            self.stop_requested = True  # let the call finish, then come back for the rest
            return
        self.requeue_and_exit()

    def checkpoint(self, current: tuple[int, Any, Any, Any]) -> tuple[Any, tuple[Any, ...], dict[str, Any]] | None:
        """The call to resume instead of ``current``, from its callable's ``checkpoint()``; None: none."""
        _, func, args, kwargs = current
        method = getattr(unwrap(func), "checkpoint", None)
        if not callable(method):
            return None
        try:
            returned = method(*args, **kwargs)
            return None if returned is None else as_call(returned)
        except Exception:  # noqa: BLE001 - a broken checkpoint leaves the call as it is
            print("clustrix.remote.runner: checkpoint() failed; the call is not checkpointed", file=sys.stderr)
            traceback.print_exc()
            return None

    def requeue_and_exit(self) -> None:
        """Ask the scheduler to run this task again and exit without an exit-code file."""
        argv = self.requeue_argv or []
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
            ok, detail = result.returncode == 0, (result.stderr or result.stdout).strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            ok, detail = False, str(exc)
        if not ok:
            print(f"clustrix.remote.runner: requeue failed ({' '.join(argv)}): {detail}", file=sys.stderr, flush=True)
            self.stop_requested = False
            return
        print(f"clustrix.remote.runner: task {self.task} requeued", file=sys.stderr, flush=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(REQUEUED_EXIT)


def checkpoint_signal(name: str) -> signal.Signals:
    """The signal called ``name`` (``TERM``, ``SIGUSR2``), or SystemExit naming :data:`SIGNAL_ENV`."""
    try:
        return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except KeyError:
        raise SystemExit(
            f"clustrix.remote.runner: {SIGNAL_ENV}={name!r} is not a signal name (e.g. TERM, USR2)"
        ) from None


def end_by_signal(signum: int) -> None:
    """End this process as ``signum`` would have without our handler (the scheduler sees that signal)."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # only if the default action did not end us


def run_task(job_dir: str, task: int) -> int:
    """Run array task ``task`` of the job in ``job_dir``; return the exit code to use."""
    os.environ[INSIDE_ENV] = "job"  # a decorated function called by a call runs here: it submits no job
    check_private(job_dir)
    payload_path = os.path.join(job_dir, PAYLOAD)
    out_dir = os.path.join(job_dir, OUT_DIR)
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    with open_private(payload_path) as fh:
        payload = pickle.load(fh)
    run = _TaskRun(job_dir, task, payload)
    if not 0 <= task < len(run.tasks):
        raise SystemExit(f"clustrix.remote.runner: task {task} is not in 0..{len(run.tasks) - 1}")
    run.install_signal_handler()
    return run.run()


def _task_from_environment() -> int:
    for name in ("CLUSTRIX_TASK_ID", "SLURM_ARRAY_TASK_ID", "PBS_ARRAY_INDEX", "PBS_ARRAYID", "SGE_TASK_ID"):
        value = os.environ.get(name, "")
        if value.isdigit():
            offset = int(os.environ.get("CLUSTRIX_TASK_OFFSET", "0"))
            return int(value) - offset
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print("usage: python -m clustrix.remote.runner JOBDIR [--task N]", file=sys.stderr)
        return 2
    job_dir = argv[0]
    task = int(argv[argv.index("--task") + 1]) if "--task" in argv else _task_from_environment()
    try:
        return run_task(job_dir, task)
    except UnsafePathError as exc:
        print(f"clustrix.remote.runner: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
