"""The remote runner: ``python -m clustrix.runner JOBDIR [--task N]``.

It loads the cloudpickled payload of a job directory, runs the calls assigned to one
array task, and writes each call's outcome atomically, then an exit-code side file.
It imports only the standard library and cloudpickle, so it can also be shipped as a
single file next to the payload and run with any Python that has cloudpickle.

Job directory layout (shared by every batch scheduler plugin)::

    JOBDIR/                 0700, owned by the submitting user
      payload.pkl           {"func", "arguments", "tasks"}; cloudpickled
      out/<index>.pkl       one outcome per call index, written atomically
      out/task-<N>.exit     the runner's exit code for array task N
      stdout / stderr       (names chosen by the scheduler plugin)

``tasks`` lists, for each array task, the call indices it runs (several tiny calls
may be packed into one task). An outcome file holds a plain pickled dict:
``{"ok": True, "value": <cloudpickle bytes>}`` or ``{"ok": False, "exception":
<cloudpickle bytes or None>, "type": "mod.Name", "message": str, "traceback": str}``.
"""

from __future__ import annotations

import os
import pickle
import stat
import sys
import tempfile
import traceback
from typing import Any

PAYLOAD = "payload.pkl"
OUT_DIR = "out"


def outcome_name(index: int) -> str:
    return f"{OUT_DIR}/{index}.pkl"


def exit_name(task: int) -> str:
    return f"{OUT_DIR}/task-{task}.exit"


class UnsafePathError(PermissionError):
    """A file to be unpickled could have been written by another user."""


def check_private(path: str, st: os.stat_result | None = None, *, uid: int | None = None) -> None:
    """Refuse ``path`` unless it is owned by ``uid`` (default: us) and not group/other-writable."""
    st = os.stat(path) if st is None else st
    expected = os.getuid() if uid is None else uid
    if st.st_uid != expected:
        raise UnsafePathError(f"{path} is owned by uid {st.st_uid}, not {expected}: refusing to unpickle it")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafePathError(f"{path} is writable by other users: refusing to unpickle it")


def _dumps(obj: Any) -> bytes:
    import cloudpickle

    data: bytes = cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return data


def encode_outcome_ok(value: Any) -> bytes:
    return pickle.dumps({"ok": True, "value": _dumps(value)}, protocol=pickle.HIGHEST_PROTOCOL)


def encode_outcome_error(exc: BaseException) -> bytes:
    tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        exc_bytes: bytes | None = _dumps(exc)
    except Exception:  # noqa: BLE001 - an unpicklable exception still travels as type, message, traceback
        exc_bytes = None
    record = {
        "ok": False,
        "exception": exc_bytes,
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc),
        "traceback": tb_text,
    }
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


def execute_batch(payload: bytes) -> list[bytes]:
    """Run ``cloudpickle.dumps((func, [(args, kwargs), ...]))`` and return encoded outcomes.

    This is what the local process pool runs in its workers.
    """
    func, arguments = pickle.loads(payload)
    return [execute_call(func, args, kwargs)[1] for args, kwargs in arguments]


def _write_atomic(path: str, data: bytes) -> None:
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def run_task(job_dir: str, task: int) -> int:
    """Run array task ``task`` of the job in ``job_dir``; return the exit code to use."""
    check_private(job_dir)
    payload_path = os.path.join(job_dir, PAYLOAD)
    check_private(payload_path)
    out_dir = os.path.join(job_dir, OUT_DIR)
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    with open(payload_path, "rb") as fh:
        payload = pickle.load(fh)
    func = payload["func"]
    arguments = payload["arguments"]
    tasks = payload.get("tasks") or [list(range(len(arguments)))]
    if not 0 <= task < len(tasks):
        raise SystemExit(f"clustrix.runner: task {task} is not in 0..{len(tasks) - 1}")
    failed = False
    for index in tasks[task]:
        args, kwargs = arguments[index]
        ok, encoded = execute_call(func, args, kwargs)
        failed = failed or not ok
        _write_atomic(os.path.join(job_dir, outcome_name(index)), encoded)
    code = 1 if failed else 0
    _write_atomic(os.path.join(job_dir, exit_name(task)), f"{code}\n".encode())
    return code


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
        print("usage: python -m clustrix.runner JOBDIR [--task N]", file=sys.stderr)
        return 2
    job_dir = argv[0]
    task = int(argv[argv.index("--task") + 1]) if "--task" in argv else _task_from_environment()
    try:
        return run_task(job_dir, task)
    except UnsafePathError as exc:
        print(f"clustrix.runner: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
