"""Shipping: make a plan's units exist under ``<remote_work_dir>/code`` and import with the job's Python.

Each unit is stored once per content hash under ``<remote_work_dir>/code/<name>-<sha256[:16]>``:
one remote command when every unit is there already, two when some must be sent, none when
this process already checked the same units with the same Python on the same host.
"""

from __future__ import annotations

import posixpath
import shlex
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from clustrix.errors import LocalCodeError
from clustrix.log import get_logger
from clustrix.remote import scripts as remote_script
from clustrix.remote.environment.activation import pythonpath_line
from clustrix.remote.localcode.plan import CodePlan
from clustrix.remote.localcode.units import archive
from clustrix.remote.scripts import SAFE_SYS_PATH

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig
    from clustrix.plugin.transport import Transport

log = get_logger("clustrix.remote.localcode")

#: The folder under ``remote_work_dir`` that holds shipped units, one sub-folder per content hash.
CODE_DIR = "code"
READY_MARKER = ".clustrix-ready"


@attrs.frozen
class ShippedCode:
    """Where a job's units are on the remote side, and what this submit had to send."""

    paths: tuple[str, ...] = ()
    sent: tuple[str, ...] = ()
    reused: tuple[str, ...] = ()

    @property
    def prelude(self) -> tuple[str, ...]:
        """The shell line that puts the units first on ``PYTHONPATH`` (none when nothing ships)."""
        line = pythonpath_line(self.paths)
        return (line,) if line else ()


#: The remote half, run by the job's own Python after the shell checked the work dir, the
#: code dir and every unit dir that exists (:mod:`clustrix.remote.scripts`), in the work dir,
#: with the current directory off ``sys.path`` before its first import: reports missing
#: units, unpacks units sent on stdin (each moved into place with one rename, so a
#: concurrent submit never sees half a unit), then imports the modules.
_REMOTE = (
    SAFE_SYS_PATH
    + r"""
import io, os, shutil, tarfile, traceback
code, mode = sys.argv[1], sys.argv[2]
sep = sys.argv.index("--")
labels, modules = sys.argv[3:sep], sys.argv[sep + 1:]
ready = lambda label: os.path.isfile(os.path.join(code, label, ".clustrix-ready"))
if mode == "unpack":
    tmp = os.path.join(code, ".incoming-%d" % os.getpid())
    os.mkdir(tmp, 0o700)
    with tarfile.open(fileobj=io.BytesIO(sys.stdin.buffer.read()), mode="r:gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tmp, filter="data")
        else:
            tar.extractall(tmp)
    for label in os.listdir(tmp):
        open(os.path.join(tmp, label, ".clustrix-ready"), "w").close()
        if not ready(label):
            try:
                os.rename(os.path.join(tmp, label), os.path.join(code, label))
            except OSError:
                if not ready(label):
                    raise
    shutil.rmtree(tmp, ignore_errors=True)
missing = [l for l in labels if not ready(l)]
for label in missing:
    print("clustrix-code: missing " + label)
if missing:
    sys.exit(0)
sys.path[:] = [os.path.join(code, l) for l in labels] + sys.path
for name in modules:
    try:
        __import__(name)
    except BaseException as exc:
        print("clustrix-code: import-failed " + name)
        print("".join(traceback.format_exception_only(type(exc), exc)).strip())
        print(traceback.format_exc()[-3000:])
        sys.exit(0)
print("clustrix-code: ok")
"""
)


def render_ship_script(
    *,
    python: str,
    work_dir: str,
    labels: Sequence[str],
    modules: Sequence[str],
    mode: str,
    prelude: Sequence[str],
) -> str:
    """The script (sent on stdin) that checks the dirs, then runs the remote half with the job's Python (pure).

    The work dir and ``code/`` are created ``0700`` or refused, an existing unit dir must be
    private too; then the job's prelude runs, so the Python is the job's own.
    """
    q = shlex.quote
    code_dir = posixpath.join(work_dir, CODE_DIR)
    units = [posixpath.join(code_dir, label) for label in labels]
    argv = [python, "-c", _REMOTE, code_dir, mode, *labels, "--", *modules]
    return "\n".join(
        [
            remote_script.CHECK_FUNCTIONS,
            *remote_script.render_work_dir_check(work_dir, [code_dir]),
            "cx_existing " + " ".join(q(u) for u in units),
            *prelude,
            " ".join(q(a) for a in argv),
            "",
        ]
    )


_shipped_lock = threading.Lock()
_shipped: set[tuple[Any, ...]] = set()


def forget_shipped() -> None:
    """Forget which units this process has seen on which remotes (tests; a new process does too)."""
    with _shipped_lock:
        _shipped.clear()


def _answer(stdout: str) -> tuple[list[str], str | None, str]:
    """(missing labels, failed module or None, status) from the remote half's output."""
    lines = stdout.splitlines()
    missing = [line.split(" ", 2)[2] for line in lines if line.startswith("clustrix-code: missing ")]
    for index, line in enumerate(lines):
        if line.startswith("clustrix-code: import-failed "):
            return missing, line.split(" ", 2)[2], "\n".join(lines[index + 1 :])
    return missing, None, "ok" if "clustrix-code: ok" in lines else ""


def planned(work_dir: str, plan: CodePlan) -> ShippedCode:
    """Where :func:`ship` puts ``plan``'s units under the (expanded) ``work_dir``; no I/O (dry runs use it too)."""
    code_dir = posixpath.join(work_dir, CODE_DIR)
    return ShippedCode(paths=tuple(posixpath.join(code_dir, unit.label) for unit in plan.units))


def ship(
    transport: Transport,
    config: ClusterConfig,
    plan: CodePlan,
    *,
    python: str,
    prelude: Sequence[str] = (),
) -> ShippedCode:
    """Make ``plan``'s units exist under ``<remote_work_dir>/code`` and import with ``python``.

    Sends only units whose content hash the remote side lacks. One command when every
    unit is there already, two when some must be sent; none when this process already
    checked the same units with the same Python on the same host. ``prelude`` is the job's
    shell before its Python, variables included
    (:meth:`~clustrix.remote.environment.activation.RemoteEnvironment.check_prelude`), so a
    module that needs an ``environment_variables`` value at import imports as in the job.
    """
    if not plan.units:
        return ShippedCode()
    work = transport.expand(config.get("remote_work_dir") or "~/.clustrix")
    code_dir = posixpath.join(work, CODE_DIR)
    labels = [unit.label for unit in plan.units]
    paths = planned(work, plan).paths
    key = (
        transport.host,
        config.connection_key,
        code_dir,
        python,
        tuple(prelude),
        paths,
        plan.modules,
    )
    with _shipped_lock:
        known = key in _shipped
    if known:
        log.info("clustrix.code_shipped", host=transport.host, sent=[], reused=labels, checked="in this process")
        return ShippedCode(paths=paths, reused=tuple(labels))

    def run(mode: str, data: bytes) -> tuple[list[str], str | None, str, str]:
        script = render_ship_script(
            python=python, work_dir=work, labels=labels, modules=plan.modules, mode=mode, prelude=prelude
        )
        result = remote_script.run_checked(transport, script, data, timeout=600)
        missing, failed, status = _answer(result.stdout)
        return missing, failed, status, (result.stderr.strip() or result.stdout.strip())[-3000:]

    missing, failed, status, output = run("probe", b"")
    sent: list[str] = []
    if missing and failed is None:
        sent = missing
        missing, failed, status, output = run("unpack", archive(u for u in plan.units if u.label in set(missing)))
    if failed is not None:
        unit = next((u for u in plan.units if u.name == failed.split(".")[0]), None)
        where = f" ({unit.source})" if unit else ""
        reason = status.splitlines()[0] if status else "no error text"
        raise LocalCodeError(
            f"local module {failed!r}{where} was shipped to {transport.host} but does not import with the remote "
            f"Python {python}: {reason}. Nothing was submitted. Install what it needs on the remote side (add the "
            "distribution to replicate_distributions, or set python_executable= to a Python that has it), or, if the "
            f"remote side has its own copy of the module, set exclude_modules=[{failed.split('.')[0]!r}]."
            f"\n{status}"
        )
    if missing or status != "ok":
        raise LocalCodeError(f"shipping local code to {transport.host} failed:\n{output}")
    shipped = ShippedCode(paths=paths, sent=tuple(sent), reused=tuple(x for x in labels if x not in sent))
    log.info("clustrix.code_shipped", host=transport.host, sent=list(shipped.sent), reused=list(shipped.reused))
    with _shipped_lock:
        _shipped.add(key)
    return shipped
