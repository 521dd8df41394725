"""The value types that pass between core and scheduler plugins."""

from __future__ import annotations

import enum
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, overload, runtime_checkable

import attrs

from clustrix.config.resources import Resources

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig
    from clustrix.plugin.transport import Transport


class JobState(enum.Enum):
    """One state vocabulary for every scheduler; plugins map their native states onto it."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    UNKNOWN = "UNKNOWN"

    @property
    def final(self) -> bool:
        """True when the job will not change state again (its outputs can be fetched)."""
        return self not in _NOT_FINAL


_NOT_FINAL = frozenset({JobState.PENDING, JobState.RUNNING, JobState.PREEMPTED, JobState.UNKNOWN})


def new_job_id() -> str:
    """A collision-free, sortable, shell- and path-safe job id: ``YYYYmmdd-HHMMSS-<12 hex>``."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(6)


@attrs.frozen(kw_only=True)
class Dependency:
    """A job whose results some calls of another job take as arguments (futures passed as arguments).

    The scheduler holds the dependant until this job has ended well (:meth:`clustrix.batch.Dialect.dependency_options`);
    the dependant's runner then reads the results from ``job_dir`` (see :mod:`clustrix.api.dependencies`).
    """

    job_id: str
    native_id: str
    job_dir: str
    #: Calls of the upstream job, and the array tasks it was submitted as.
    size: int = 1
    tasks: int = 1
    #: ``(dependant call, upstream call)`` for every upstream result an argument stands for.
    calls: tuple[tuple[int, int], ...] = ()
    #: Set by the batch engine: the dependant's task *t* needs only the upstream's task *t* (same
    #: packing, call *i* reads call *i*), so a scheduler may hold each task for its own (SLURM ``aftercorr``).
    elementwise: bool = False
    #: The upstream's handle, for a scheduler that needs more of it than its ids (Kubernetes: its
    #: namespace, Job names, deadline and result key); left out of ``repr``.
    handle: JobHandle | None = attrs.field(default=None, eq=False, repr=False)

    def one_to_one(self, size: int) -> bool:
        """Whether call *i* of a ``size``-call dependant reads call *i* of this job, and nothing else of it."""
        return size == self.size and sorted(self.calls) == [(i, i) for i in range(size)]


@attrs.frozen(kw_only=True)
class JobSpec:
    """Everything a scheduler needs to run one job: one call, or many calls as one array.

    ``func`` is shared by every task; ``arguments`` holds one ``(args, kwargs)`` pair per
    task, so ``len(arguments) == 1`` for a single call. ``config`` is the resolved
    configuration; ``environment`` is the snapshot made by the ``clustrix_capture_environment``
    hooks (empty for a scheduler whose ``needs_environment`` is False).
    """

    job_id: str = attrs.field(factory=new_job_id)
    name: str
    func: Callable[..., Any]
    arguments: Sequence[tuple[tuple[Any, ...], dict[str, Any]]]
    resources: Resources = attrs.field(factory=Resources)
    config: ClusterConfig
    environment: dict[str, Any] = attrs.field(factory=dict)
    #: Jobs on the same cluster whose results some arguments stand for (empty: none).
    dependencies: tuple[Dependency, ...] = ()

    @property
    def size(self) -> int:
        return len(self.arguments)


@attrs.frozen(kw_only=True)
class JobHandle:
    """What a scheduler returns from submit: enough to poll, fetch and cancel, also later.

    It must stay JSON-serialisable (``native_id``, ``job_dir``, ``host`` and ``data``
    hold strings, numbers, lists and dicts only): the job registry stores it so another
    process can attach to the job.
    """

    job_id: str
    scheduler: str
    size: int = 1
    native_id: str | None = None
    host: str | None = None
    job_dir: str | None = None
    data: dict[str, Any] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobHandle:
        return cls(**data)


@attrs.frozen(kw_only=True)
class JobStatus:
    """A scheduler's answer for one job; ``reason`` is the scheduler's own words.

    ``counts`` (optional) tells how many calls of an array are ``done``, ``failed``,
    ``running`` and ``pending``: the progress bar of ``.map()`` and ``clustrix status``
    show it. A scheduler that cannot tell leaves it None.
    """

    state: JobState
    reason: str | None = None
    exit_code: int | None = None
    counts: dict[str, int] | None = None


@attrs.frozen(kw_only=True)
class Outcome:
    """The result of one call: a value, or an exception with the remote traceback text.

    ``exception`` is None when the remote exception could not be unpickled; then
    ``error_type``, ``error_message`` and ``traceback`` still describe it.
    """

    ok: bool
    value: Any = None
    exception: BaseException | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None


class MappedArguments(Sequence[tuple[tuple[Any, ...], dict[str, Any]]]):
    """The arguments of a ``.map()``: one positional tuple per call (``items``), no keywords.

    Indexing gives the ``(args, kwargs)`` pairs of the :attr:`JobSpec.arguments` contract;
    the local executor slices ``items`` directly instead of building ten thousand pairs.
    It pickles as a plain list of pairs, so a remote side never needs this class.
    """

    def __init__(self, items: list[tuple[Any, ...]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> tuple[tuple[Any, ...], dict[str, Any]]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[tuple[Any, ...], dict[str, Any]]]: ...

    def __getitem__(
        self, index: int | slice
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | Sequence[tuple[tuple[Any, ...], dict[str, Any]]]:
        if isinstance(index, slice):
            return MappedArguments(self.items[index])
        return (self.items[index], {})

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, ([(items, {}) for items in self.items],))


class Outcomes(Sequence[Outcome | None]):
    """Outcomes built on demand from ``(ok, value)`` pairs, for schedulers that run calls in this process.

    Building ten thousand :class:`Outcome` objects costs more than ten thousand tiny
    calls; when every call succeeded, :attr:`values` hands the values over as they are.
    ``make(index, pair)`` builds the outcome of a pair that is not a success.
    """

    def __init__(self, pairs: Sequence[tuple[Any, Any] | None], make: Callable[[int, tuple[Any, Any]], Outcome]):
        self._pairs = pairs
        self._make = make

    def __len__(self) -> int:
        return len(self._pairs)

    @overload
    def __getitem__(self, index: int) -> Outcome | None: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Outcome | None]: ...

    def __getitem__(self, index: int | slice) -> Outcome | Sequence[Outcome | None] | None:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        pair = self._pairs[index]
        if pair is None:
            return None
        if pair[0] is True:
            return Outcome(ok=True, value=pair[1])
        return self._make(index if index >= 0 else index + len(self), pair)

    @property
    def values(self) -> list[Any] | None:
        """Every call's value in order when all of them succeeded, else None."""
        if all(pair is not None and pair[0] is True for pair in self._pairs):
            return [pair[1] for pair in self._pairs]  # type: ignore[index]
        return None


#: The members :class:`Scheduler` declares; registering an object without one of them is an error naming it.
SCHEDULER_MEMBERS = (
    "needs_environment",
    "persistent",
    "python_needs",
    "resource_keys",
    "clustrix_submit",
    "clustrix_poll",
    "clustrix_fetch",
    "clustrix_cancel",
    "clustrix_read_logs",
)


@runtime_checkable
class Scheduler(Protocol):
    """The contract of an object registered with ``register(name, scheduler)``.

    Its methods are the routed scheduler hooks (each decorated ``@hookimpl``; an
    implementation may take fewer arguments than the hookspec). ``clustrix_dry_run`` and
    ``clustrix_remove_job_dir`` are optional. The attributes declare what core does around
    the scheduler's jobs; every scheduler sets all four (core reads them as they are, and
    refuses at registration a scheduler that lacks one, naming it).
    """

    #: True: core captures the local environment for each job (``JobSpec.environment``), so the
    #: remote side can rebuild it; False skips the capture (the local executor shares this interpreter).
    needs_environment: bool
    #: True: jobs outlive this process, so core records them in the job registry (``Job.attach``,
    #: ``clustrix jobs``) and never cancels one silently on Ctrl-C; False: they end with the process.
    persistent: bool
    #: The modules a job's Python must import: ``clustrix doctor`` checks a configured
    #: ``python_executable`` for them (empty when jobs never run another Python).
    python_needs: tuple[str, ...]
    #: The ``@cluster`` keywords this scheduler understands beyond core's resources, each with a
    #: one-line description; they reach it in ``JobSpec.resources.extra``. A batch scheduler's are
    #: its dialect's ``extras``. Core accepts a keyword at decoration if any registered scheduler declares it.
    resource_keys: Mapping[str, str]

    def clustrix_submit(self, spec: JobSpec, wake: Callable[[], None]) -> JobHandle: ...

    def clustrix_poll(self, handles: Sequence[JobHandle], config: ClusterConfig) -> Mapping[str, JobStatus]: ...

    def clustrix_fetch(self, handle: JobHandle, config: ClusterConfig) -> Sequence[Outcome | None]: ...

    def clustrix_cancel(self, handle: JobHandle, config: ClusterConfig) -> bool: ...

    def clustrix_read_logs(self, handle: JobHandle, config: ClusterConfig, stream: str) -> str: ...


@runtime_checkable
class ReadsInputsOnTheCluster(Protocol):
    """Optional, with ``holds_dependencies = True``: a scheduler whose dependants read their inputs elsewhere than
    in the upstream's ``job_dir`` (Kubernetes: the pod fetches them into its own scratch before the runner starts).

    ``input_dir`` returns the directory the runner reads the upstream's outcome files from, or None
    when a dependant submitted with ``config`` cannot reach them (another namespace): the client chains then.
    """

    def input_dir(self, handle: JobHandle, config: ClusterConfig) -> str | None: ...


@runtime_checkable
class ChecksBeforeConnecting(Protocol):
    """Optional: a scheduler with checks of its own for ``clustrix doctor``, run before any connection.

    Each is a name and a function that returns what it found in words or raises saying what is wrong
    (Kubernetes: the permissions the namespace grants, and whether it looks shared).
    """

    def doctor_checks(self, config: ClusterConfig) -> list[tuple[str, Callable[[], Any]]]: ...


@runtime_checkable
class ProbesTarget(Protocol):
    """Optional: a scheduler that ``clustrix doctor`` asks to look at its target once connected.

    ``probe`` returns what it found in words (a batch scheduler: its commands and site limits) or raises.
    """

    def probe(self, config: ClusterConfig, transport: Transport) -> str: ...


@runtime_checkable
class ResubmitsCalls(Protocol):
    """Optional: a scheduler that runs some calls of a finished job again, in the same job.

    ``retries`` (a lost call) and ``clustrix retry`` (the failed calls) ask it; it returns the
    job's handle under its new native id, with the same ``job_id`` and job directory. With
    ``unless_cancelled`` (``retries``), a job cancelled through clustrix is refused
    (``JobCancelledError``) and left as it is. A dialect on the batch engine has it already
    (:mod:`clustrix.batch.retry`).
    """

    def resubmit(
        self, handle: JobHandle, config: ClusterConfig, calls: Sequence[int], *, unless_cancelled: bool = False
    ) -> JobHandle: ...
