"""Running some calls of a finished batch job again, in the same job (``retries``, ``clustrix retry``).

The job directory keeps its payload, runner and script; one remote command forgets the calls
to run again (their outcome, failure marker and claim), the exit-code files of the tasks and the
cancel marker, then submits the job's own script again with the command it was first submitted
with. The array's first tasks to start find those calls unclaimed and run them (dynamic
packing: a task steals every call nobody holds), the other tasks find nothing left and end at
once, or are taken out of the queue by the engine's sweep once every call has its outcome. The
job keeps its clustrix id and directory: only its native id changes, so every outcome is read
where it always was and ``results()`` comes back whole and in order.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from clustrix.batch.dialect import ParseError
from clustrix.errors import ConfigurationError, JobCancelledError, SchedulerCommandError, SubmitRejectedError
from clustrix.plugin.types import JobHandle, JobState
from clustrix.remote import runner
from clustrix.remote.report import run_script_bytes

if TYPE_CHECKING:
    from clustrix.batch.engine import BatchScheduler
    from clustrix.config.settings import ClusterConfig

#: Where a batch job's handle keeps the command line it was submitted with (run again in its directory).
SUBMIT_KEY = "submit"
COMMAND_TIMEOUT = 120.0
CANCELLED_MESSAGE = "clustrix: the job was cancelled through clustrix: its calls are not run again"


def render_resubmit(
    *, job_dir: str, calls: Sequence[int], submit: str, marker: str, unless_cancelled: bool = False
) -> str:
    """Forget ``calls`` and every task's exit code in ``job_dir``, then submit its script again (``exec``).

    Any other call without an outcome keeps a claim no task holds, so it does not run again.

    ``unless_cancelled``: a job cancelled through clustrix (its marker) is left as it is (exit 4).
    """
    q = shlex.quote
    out = runner.OUT_DIR
    cancelled = f"[ ! -e {runner.CANCELLED} ] || {{ echo '{CANCELLED_MESSAGE}' >&2; exit 4; }}"
    lines = [
        f"cd {q(job_dir)} || exit 1",
        f"[ -f {runner.PAYLOAD} ] || {{ echo 'clustrix: the job directory has no payload (removed?)' >&2; exit 1; }}",
        *([cancelled] if unless_cancelled else []),
        f"rm -f -- {runner.CANCELLED} {out}/task-*.exit",
        f"for i in {' '.join(str(int(i)) for i in calls)}; do",
        f'  rm -f -- "{out}/$i.pkl" "{out}/$i.failed" "{out}/$i.claim"',
        "done",
        # any other call left without an outcome stays lost: no task of the new array holds its claim
        f"for c in {out}/*.claim; do",
        '  [ -e "$c" ] && [ ! -e "${c%.claim}.pkl" ] && printf -- "-\\n" > "$c"',
        "done",
        f"echo @{marker} reset",
        f"exec {submit}",
        "",
    ]
    return "\n".join(lines)


def resubmit(
    scheduler: BatchScheduler,
    handle: JobHandle,
    config: ClusterConfig,
    calls: Sequence[int],
    *,
    unless_cancelled: bool = False,
) -> JobHandle:
    """Run ``calls`` of the finished job ``handle`` again; its handle under the new native id.

    ``unless_cancelled``: refuse (``JobCancelledError``) a job cancelled through clustrix.
    """
    d = scheduler.dialect
    submit = handle.data.get(SUBMIT_KEY)
    if not handle.job_dir or not isinstance(submit, str):
        raise ConfigurationError(
            f"job {handle.job_id} was submitted by a clustrix that did not keep its submit command: "
            "its calls cannot be run again in the same job; submit them again"
        )
    bad = [i for i in calls if not 0 <= i < handle.size]
    if bad:
        raise ValueError(f"job {handle.job_id} has calls 0..{handle.size - 1}, not {bad}")
    transport = scheduler.transport(config)
    marker = secrets.token_hex(6)
    script = render_resubmit(
        job_dir=handle.job_dir,
        calls=sorted(set(calls)),
        submit=submit,
        marker=marker,
        unless_cancelled=unless_cancelled,
    )
    code, out, err = run_script_bytes(transport, script, timeout=COMMAND_TIMEOUT)
    text, errors = out.decode(errors="replace"), err.decode(errors="replace").strip()
    if CANCELLED_MESSAGE in errors:
        raise JobCancelledError(CANCELLED_MESSAGE.removeprefix("clustrix: "), job_id=handle.job_id)
    reset = f"@{marker} reset\n"
    if reset not in text or code != 0:
        reason = errors.removeprefix("clustrix: ") or text.strip() or f"exit {code}"
        raise SubmitRejectedError(
            f"{d.label or d.name} did not take job {handle.job_id} again on {transport.host}: {reason}",
            reason=reason,
            state=JobState.FAILED,
        )
    try:
        native_id = d.parse_submit(text.split(reset, 1)[1])
    except ParseError as exc:
        raise SchedulerCommandError(f"{d.label or d.name} took job {handle.job_id} again but: {exc}") from exc
    scheduler.forget(handle.job_id)
    return attrs.evolve(handle, native_id=native_id)
