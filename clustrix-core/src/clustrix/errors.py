"""Exceptions raised to users, and how a remote traceback is attached to a re-raised exception."""

from __future__ import annotations

import concurrent.futures
import difflib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the runner imports this module on a compute node: the standard library only at run time
    from clustrix.plugin.transport import CommandResult
    from clustrix.plugin.types import JobState, Outcome


class ClustrixError(Exception):
    """Base class of every error clustrix itself raises."""


class ConfigurationError(ClustrixError, ValueError):
    """The configuration or a plugin set-up cannot work; the message says how to fix it."""


class SchedulerNotFoundError(ConfigurationError):
    """``cluster_type`` names a scheduler no installed plugin provides."""


class StateFileError(ClustrixError):
    """A file or folder clustrix keeps state in (job registry, data dir) cannot be used.

    The message names the path and how to fix it.
    """


class UnsafePathError(ClustrixError, PermissionError):
    """A file to be unpickled, or a directory to write into, could have been written by another user.

    The message names the path, why it is refused and the fix. (:mod:`clustrix.remote.runner`,
    shipped alone next to a payload, raises a ``PermissionError`` of its own with the same name.)
    """


class LoginNeededError(ClustrixError, ConnectionError):
    """A host can be reached again only once the user logs in again (an expired two-factor login).

    Raised by a transport plugin. Jobs are not given up for it: the poller says once what to do
    (:meth:`remedy`) and goes on waiting, then picks up as soon as the host answers again.
    """

    def remedy(self, host: str) -> str:
        """What the user does to reach ``host`` again (a plugin's error names its own command)."""
        return f"log in to {host} again"


class CommandError(ClustrixError, RuntimeError):
    """A command run through a transport failed; the message carries its stderr."""

    def __init__(self, result: CommandResult) -> None:
        self.result = result
        output = result.stderr.strip() or result.stdout.strip()
        super().__init__(f"command {' '.join(result.argv)!r} exited {result.returncode}: {output}")


class ParseError(ClustrixError, ValueError):
    """A scheduler command printed something the plugin does not understand."""


class ReportError(ClustrixError, ValueError):
    """A remote script's output is not a well-formed report (truncated, or not ours)."""


class PythonVersionMismatchError(ConfigurationError):
    """The remote Python's major.minor differs from the local one (pickles may not load)."""


class EnvironmentBuildError(ClustrixError):
    """The remote environment could not be built; the message carries the build log's tail."""


class NoWheelError(EnvironmentBuildError, ValueError):
    """The remote side reaches no package index and a distribution has no wheel for its platform.

    Raised before anything is submitted; the message names each distribution and the fixes.
    """


class LocalCodeError(ConfigurationError):
    """The user's own code cannot travel with the call; the message names the module and the fix."""


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``" (did you mean 'cores'?)"`` for the closest of ``candidates``, or ``""`` if none is close."""
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class RemoteTraceback(Exception):
    """Chained as ``__cause__`` of a re-raised remote exception, so the traceback prints."""

    def __init__(self, traceback_text: str) -> None:
        super().__init__(traceback_text)
        self.traceback_text = traceback_text

    def __str__(self) -> str:
        return "\n\nRemote traceback:\n" + self.traceback_text


class JobError(ClustrixError):
    """A job failed outside the user's code, or its exception could not be brought back.

    ``state`` and ``reason`` are the scheduler's words, ``stderr_tail`` the end of the
    job's standard error; ``error_type`` and ``remote_traceback`` describe a remote
    exception that could not be unpickled.
    """

    def __init__(
        self,
        message: str,
        *,
        job_id: str | None = None,
        state: JobState | None = None,
        reason: str | None = None,
        stderr_tail: str | None = None,
        error_type: str | None = None,
        remote_traceback: str | None = None,
    ) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.state = state
        self.reason = reason
        self.stderr_tail = stderr_tail
        self.error_type = error_type
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        text = super().__str__()
        if self.reason:
            text += f" (reason: {self.reason})"
        if self.stderr_tail:
            text += "\n--- end of the job's stderr ---\n" + self.stderr_tail
        if self.remote_traceback:
            text += "\n--- remote traceback ---\n" + self.remote_traceback
        return text


class JobTimeoutError(JobError, TimeoutError):
    """The scheduler ended the job at its time limit."""


class JobOutOfMemoryError(JobError, MemoryError):
    """The scheduler ended the job for using more memory than it asked for."""


class JobCancelledError(JobError, concurrent.futures.CancelledError):
    """The job was cancelled (by a user, an admin or the scheduler)."""


class JobLostError(JobError):
    """The job ended without writing a result: node failure, killed runner, missing files."""


class DependencyError(JobError):
    """An input of the call (a future passed as an argument) failed, was cancelled or is gone, so the call never ran.

    ``upstream_job_id`` and ``upstream_call`` name the job and call whose result was the input; the
    upstream's own exception is the ``__cause__`` when it is known (see :mod:`clustrix.api.dependencies`).
    """

    def __init__(
        self, message: str, *, upstream_job_id: str | None = None, upstream_call: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.upstream_job_id = upstream_job_id
        self.upstream_call = upstream_call


def error_for_state(state: JobState) -> type[JobError]:
    """The exception class a user sees for a job that ended in ``state`` without a result."""
    from clustrix.plugin.types import JobState

    return {
        JobState.TIMEOUT: JobTimeoutError,
        JobState.OUT_OF_MEMORY: JobOutOfMemoryError,
        JobState.CANCELLED: JobCancelledError,
        JobState.NODE_FAIL: JobLostError,
    }.get(state, JobError)


# ---- batch and ssh submission
class SubmitRejectedError(JobError, ValueError):
    """The scheduler refused the job at submission; the message is the scheduler's own."""


class StagingError(ClustrixError, OSError):
    """The job directory could not be created or written (not private, full, read-only); nothing was submitted."""


class SchedulerCommandError(ClustrixError, RuntimeError):
    """A scheduler command failed in a way that is not about one job (the message carries its stderr)."""


class SchedulerCommandNotFoundError(SchedulerCommandError):
    """A scheduler command is not on the target's PATH (a laptop, a node without the client): nothing was submitted."""


def exception_from_outcome(outcome: Outcome, *, job_id: str | None = None) -> BaseException:
    """The exception a failed call re-raises: the original one with its remote traceback,
    or a :class:`JobError` naming the type when the original could not be unpickled here."""
    exc = outcome.exception
    if exc is not None:
        if exc.__traceback__ is None and outcome.traceback:
            exc.__cause__ = RemoteTraceback(outcome.traceback)
            try:
                exc.remote_traceback = outcome.traceback  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
        return exc
    return JobError(
        f"the job raised {outcome.error_type}: {outcome.error_message} "
        "(the exception could not be unpickled here, so it is reported as a JobError)",
        job_id=job_id,
        error_type=outcome.error_type,
        remote_traceback=outcome.traceback,
    )
