"""``clustrix jobs``, ``status``, ``logs``, ``result``, ``retry`` and ``cancel``: the jobs in the local registry."""

from __future__ import annotations

import argparse
import datetime
import os
import pickle
import sys
from typing import Any

from clustrix import registry
from clustrix.api.job import Job
from clustrix.cli.output import emit
from clustrix.errors import ClustrixError
from clustrix.remote.runner import write_atomic


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def cmd_jobs(args: argparse.Namespace) -> int:
    records = registry.list_jobs(limit=args.limit, unfinished_only=args.running)
    data = [{**r.to_dict(), "after": upstream_of(r)} for r in records]
    header = f"{'JOB ID':<30} {'SCHEDULER':<10} {'NATIVE':<12} {'STATE':<14} {'CALLS':>5}  {COUNTS_HEADER:<18}  "
    lines = [header + f"{'SUBMITTED':<19}  {'NAME':<20}  AFTER"]
    lines += [
        f"{r.job_id:<30} {r.scheduler:<10} {r.handle.native_id or '-':<12} {r.state.value:<14} {r.size:>5}  "
        f"{_counts_column(r.counts):<18}  {_when(r.submitted_at):<19}  {r.name:<20}  {','.join(upstream_of(r)) or '-'}"
        for r in records
    ]
    emit(data, args.json, "\n".join(lines))
    return 0


#: The calls of a job, as ``clustrix jobs`` shows them (at the last update of the registry).
COUNTS_HEADER = "DONE/FAIL/RUN/PEND"
COUNT_KEYS = ("done", "failed", "running", "pending")


def upstream_of(record: registry.JobRecord) -> list[str]:
    """The jobs whose results ``record``'s calls take as arguments (what it waits for, or waited for)."""
    return [str(entry.get("job")) for entry in record.handle.data.get("after") or []]


def waiting_for(record: registry.JobRecord) -> list[str]:
    """The upstream jobs of ``record`` that have not finished yet, as the registry knows them."""
    waiting = []
    for job_id in upstream_of(record):
        try:
            if not Job.attach(job_id).status().state.final:
                waiting.append(job_id)
        except ClustrixError:
            waiting.append(job_id)  # not in this registry: it may still run
    return waiting


def dependants_of(job_id: str) -> list[str]:
    """Every registered job that takes ``job_id``'s results, directly or through others (nearest first)."""
    records = registry.list_jobs(limit=100000)
    found: list[str] = []
    frontier = [job_id]
    while frontier:
        upstream = frontier.pop(0)
        for r in records:
            if upstream in upstream_of(r) and r.job_id not in found:
                found.append(r.job_id)
                frontier.append(r.job_id)
    return found


def _counts_column(counts: dict[str, int] | None) -> str:
    return "/".join(str(counts.get(key, 0)) for key in COUNT_KEYS) if counts else "-"


def cmd_status(args: argparse.Namespace) -> int:
    job = Job.attach(args.job_id)
    status = job.status()
    counts = status.counts or (job.record.counts if status.state == job.record.state else None)
    data = {
        **job.record.to_dict(),
        "state": status.state.value,
        "reason": status.reason,
        "exit_code": status.exit_code,
        "counts": counts,
    }
    text = f"{job.job_id}: {status.state.value}" + (f" ({status.reason})" if status.reason else "")
    if not status.state.final and (waiting := waiting_for(job.record)):
        data["waiting_for"] = waiting
        text += f"\nwaiting for {', '.join(waiting)}"
    if counts:
        calls = ", ".join(f"{counts.get(key, 0)} {key}" for key in COUNT_KEYS)
        text += f"\n{job.handle.size} calls: {calls}"
    emit(data, args.json, text)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    job = Job.attach(args.job_id)
    stream = "stderr" if args.stderr else "stdout"
    text = job.logs(stream)
    emit({"job_id": job.job_id, "stream": stream, "text": text}, args.json, text.rstrip("\n"))
    return 0


def cmd_result(args: argparse.Namespace) -> int:
    job = Job.attach(args.job_id)
    if not args.wait:
        status = job.status()
        if not status.state.final:
            raise ClustrixError(f"job {job.job_id} is {status.state.value}; use --wait to block until it finishes")
    futures = job.futures(timeout=args.timeout)
    failed = [(index, f.exception()) for index, f in enumerate(futures) if f.exception() is not None]
    if failed:
        data = [_describe_failure(job.job_id, index, exc) for index, exc in failed if exc is not None]
        text = "\n".join(_failure_text(item, len(futures)) for item in data)
        if args.json:
            emit({"job_id": job.job_id, "failed": data}, True, "")
        else:
            print(text, file=sys.stderr)
        return 1
    value: Any = [f.result() for f in futures] if job.handle.size > 1 else futures[0].result()
    if args.output:
        _write_result(args.output, pickle.dumps(value), force=args.force)
        emit({"job_id": job.job_id, "output": args.output}, args.json, f"result pickled to {args.output}")
    else:
        emit({"job_id": job.job_id, "result": value}, args.json, repr(value))
    return 0


def _write_result(path: str, data: bytes, *, force: bool) -> None:
    """Store ``data`` at ``path``, mode 0600, never through a symbolic link.

    A new file only (``O_CREAT|O_EXCL|O_NOFOLLOW``: an existing file or link is refused), or
    with ``force`` a private file renamed over what is there (a link is replaced, not followed).
    """
    if force:
        if os.path.isdir(path) and not os.path.islink(path):
            raise ClustrixError(f"{path} is a directory: give a file name to write the result to")
        write_atomic(path, data)
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ClustrixError(
            f"{path} already exists (a file or a link): clustrix result -o writes a new file; choose another "
            "name, or add --force to replace it"
        ) from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _describe_failure(job_id: str, index: int, exc: BaseException) -> dict[str, Any]:
    """What the CLI reports of a call that failed: its exception type, message and remote traceback."""
    remote = getattr(exc, "remote_traceback", None)
    error_type = getattr(exc, "error_type", None) or _type_name(exc)
    return {"job_id": job_id, "call": index, "type": error_type, "message": str(exc), "remote_traceback": remote}


def _failure_text(item: dict[str, Any], calls: int) -> str:
    where = f"call {item['call']} of job {item['job_id']}" if calls > 1 else f"job {item['job_id']}"
    message = item["message"]
    if item["remote_traceback"] and item["remote_traceback"] in message:
        message = message.replace(item["remote_traceback"], "").rstrip().removesuffix("--- remote traceback ---")
    lines = [f"{where} failed: {item['type']}: {message.rstrip()}"]
    if item["remote_traceback"]:
        lines += ["remote traceback:", item["remote_traceback"].rstrip()]
    return "\n".join(lines)


def cmd_cancel(args: argparse.Namespace) -> int:
    job = Job.attach(args.job_id)
    ok = job.cancel()
    data: dict[str, Any] = {"job_id": job.job_id, "cancelled": ok}
    text = f"{job.job_id}: {'cancelled' if ok else 'not cancelled'}"
    if getattr(args, "with_dependants", False):
        data["dependants"] = {}
        for dependant in dependants_of(job.job_id):
            other = Job.attach(dependant)
            done = other.record.state.final or other.cancel()
            data["dependants"][dependant] = done
            text += f"\n{dependant}: {'cancelled' if done else 'not cancelled'} (a dependant)"
    emit(data, args.json, text)
    return 0 if ok else 1


def cmd_retry(args: argparse.Namespace) -> int:
    job = Job.attach(args.job_id)
    calls = job.retry_failed()
    if calls:
        listed = ", ".join(map(str, calls[:20])) + (f" and {len(calls) - 20} more" if len(calls) > 20 else "")
        text = (
            f"{job.job_id}: call(s) {listed} submitted again ({job.handle.scheduler} job {job.handle.native_id}); "
            f"clustrix result --wait {job.job_id} waits for every result"
        )
    else:
        text = f"{job.job_id}: no call failed; nothing submitted"
    emit({"job_id": job.job_id, "calls": calls, "native_id": job.handle.native_id}, args.json, text)
    return 0
