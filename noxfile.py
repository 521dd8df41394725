"""Build, test, lint, type-check and document every clustrix distribution.

Every session prints how long it took. Every session installs the distributions as *wheels built from the current source
in this nox run* (never editable, never a cached build), so packaging mistakes and
undeclared dependencies show up here instead of on a user's machine:

- ``tests-all`` installs everything together and runs every test once (each end-to-end
  test against the real systems runs here and nowhere else, the conformance suite included);
- ``tests-<dist>`` installs clustrix-core plus only that one plugin and runs a packaging
  smoke subset: ``clustrix plugins`` finds it, and its tests that need no testbed pass
  against the wheels (this catches undeclared dependencies and missing files);
- ``build`` builds each sdist and a wheel from it, installs all wheels into a
  fresh environment and runs ``clustrix plugins``.

``nox`` runs the default sessions; ``bash scripts/test.sh`` runs those plus every
``tests-<dist>`` session, as CI does.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nox
from nox.command import CommandFailed

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "types", "docs", "build", "tests-all"]
nox.options.error_on_external_run = True

ROOT = Path(__file__).resolve().parent
PYTHON = os.environ.get("CLUSTRIX_NOX_PYTHON", "3.11")
#: The Pythons core supports: ``tests-core-pythons`` runs core's tests on each (``tests-core`` covers PYTHON).
CORE_PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


def _expose_pyenv_pythons() -> None:
    """Put ``python3.X`` of every pyenv-installed version on PATH, ahead of pyenv's shims.

    A shim answers only for the versions ``pyenv global`` selects; nox and uv look the
    interpreters up by name, so link the real ones into a folder of their own.
    """
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    links = Path(tempfile.mkdtemp(prefix="clustrix-pythons-"))
    atexit.register(shutil.rmtree, links, ignore_errors=True)
    for version in CORE_PYTHONS:
        found = sorted(versions.glob(f"{version}.*/bin/python{version}"))
        if found:
            (links / f"python{version}").symlink_to(found[-1])
    os.environ["PATH"] = f"{links}{os.pathsep}{os.environ.get('PATH', '')}"


_expose_pyenv_pythons()

#: Short name -> (distribution directory, import name).
DISTRIBUTIONS = {
    "core": ("clustrix-core", "clustrix"),
    "slurm": ("clustrix-slurm", "clustrix_slurm"),
    "pbs": ("clustrix-pbs", "clustrix_pbs"),
    "sge": ("clustrix-sge", "clustrix_sge"),
    "k8s": ("clustrix-k8s", "clustrix_k8s"),
    "ssh": ("clustrix-ssh", "clustrix_ssh"),
}
#: Plugins the tests install like a third party would (short name -> project directory).
TEST_PLUGINS = {
    "testsched": ROOT / "tests" / "plugins" / "clustrix-testsched",
    "tsp": ROOT / "tests" / "plugins" / "clustrix-tsp",
    # the transport that reaches the OpenPBS testbed inside its network namespace (tests/testbed/openpbs.py)
    "openpbs-netns": ROOT / "tests" / "plugins" / "clustrix-openpbs-netns",
}
#: Test plugins a distribution's own tests import (its session installs them too).
TEST_PLUGINS_FOR = {"pbs": ["openpbs-netns"]}
#: The smoke subset of a per-distribution session: every test that needs no testbed.
SMOKE = "not (testbed_slurm or testbed_ssh or testbed_sge or testbed_pbs or testbed_k8s or slow)"
#: Distributions a plugin's tests also need: the batch schedulers are tested through
#: both transports, local and over SSH, and the SSH transport lives in clustrix-ssh.
TEST_ALSO_NEEDS = {"slurm": ["ssh"], "pbs": ["ssh"], "sge": ["ssh"]}
TEST_DEPS = [
    # <9.2: pytest-xdist 3.8 groups tests (--dist loadgroup) by renaming Item._nodeid, which pytest 9.2 no longer reads
    "pytest>=8,<9.2",
    "hypothesis>=6.100",
    "pytest-timeout>=2.3",
    "pytest-xdist>=3.6",
]
#: tests/notebooks and tests/slurm/test_notebook.py run a real Jupyter kernel (tests-all, tests-slurm).
NOTEBOOK_DEPS = ["nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29"]
RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"
TYPES_PARAMIKO = "types-paramiko==5.1.0.20261030"
TEST_RESULTS = ROOT / "build" / "test-results"

_wheel_dir: Path | None = None


def _uses_uv(session: nox.Session) -> bool:
    return getattr(session.virtualenv, "venv_backend", None) == "uv"


def _build(session: nox.Session, project: Path, outdir: Path, *, sdist: bool) -> None:
    """Build ``project`` into ``outdir``: a wheel, or an sdist and a wheel built from that sdist."""
    kinds = [] if sdist else ["--wheel"]
    if _uses_uv(session):
        session.run("uv", "build", "--quiet", *kinds, "--out-dir", str(outdir), str(project))
    else:
        session.install("build")
        session.run("python", "-m", "build", *kinds, "--outdir", str(outdir), str(project))


def _local_projects() -> dict[str, Path]:
    """The distribution directories that exist now (plus the test plugins), by short name."""
    projects = {
        name: ROOT / path for name, (path, _) in DISTRIBUTIONS.items() if (ROOT / path / "pyproject.toml").exists()
    }
    projects.update({name: path for name, path in TEST_PLUGINS.items() if (path / "pyproject.toml").exists()})
    return projects


def _dist_names() -> list[str]:
    """Short names of the distributions (not the test plugins) that exist now."""
    return [name for name in _local_projects() if name in DISTRIBUTIONS]


def _wheels(session: nox.Session, *names: str) -> dict[str, Path]:
    """Wheels of the named local distributions (default: all), each built from the current source once per nox run."""
    global _wheel_dir
    if _wheel_dir is None:
        _wheel_dir = Path(tempfile.mkdtemp(prefix="clustrix-wheels-"))
        atexit.register(shutil.rmtree, _wheel_dir, ignore_errors=True)
    projects = _local_projects()
    wheels: dict[str, Path] = {}
    for name in names or projects:
        if name not in projects:
            session.error(f"{name} has no pyproject.toml to build")
        outdir = _wheel_dir / name
        if not outdir.exists():
            _build(session, projects[name], outdir, sdist=False)
        found = sorted(outdir.glob("*.whl"))
        if len(found) != 1:
            session.error(f"expected one wheel for {projects[name].name} in {outdir}, found {found}")
        wheels[name] = found[0]
    return wheels


def _install_wheels(session: nox.Session, wheels: list[Path], *extra: str) -> None:
    """Install ``wheels`` with their dependencies, then force those exact files over anything cached."""
    files = [str(w) for w in wheels]
    session.install(*files, *extra)
    session.install("--force-reinstall", "--no-deps", *files)


def _has_tests(folder: Path) -> bool:
    return folder.is_dir() and any(
        p for pattern in ("test_*.py", "*_test.py") for p in folder.rglob(pattern) if "testbed" not in p.parts
    )


def timed(func: Callable[[nox.Session], None]) -> Callable[[nox.Session], None]:
    """Print the session's wall time when it ends (also when it fails), to keep CI's budget in sight."""

    @functools.wraps(func)
    def run(session: nox.Session) -> None:
        started = time.monotonic()
        try:
            func(session)
        finally:
            print(f"nox > {session.name} took {time.monotonic() - started:.1f} s", flush=True)

    return run


def _pytest(session: nox.Session, *args: str, success_codes: list[int] | None = None) -> None:
    """pytest with a JUnit file per session, which scripts/test.sh's closing line counts."""
    TEST_RESULTS.mkdir(parents=True, exist_ok=True)
    junit = TEST_RESULTS / f"{session.name}.xml"
    session.run("pytest", f"--junitxml={junit}", *args, *session.posargs, success_codes=success_codes or [0])


def _make_dist_tests(short: str) -> None:
    test_dir = "tests/core" if short == "core" else f"tests/{short}"

    @nox.session(name=f"tests-{short}", python=PYTHON)
    @timed
    def tests(session: nox.Session) -> None:
        if not (ROOT / DISTRIBUTIONS[short][0] / "pyproject.toml").exists():
            session.skip(f"{DISTRIBUTIONS[short][0]} does not exist yet")
        names = ["core"] if short == "core" else ["core", short, *TEST_ALSO_NEEDS.get(short, [])]
        if "testsched" in _local_projects():
            names.append("testsched")
        names.extend(n for n in TEST_PLUGINS_FOR.get(short, []) if n in _local_projects())
        # tests/slurm/test_notebook.py imports nbclient at collection, even when its testbed tests are deselected
        notebooks = NOTEBOOK_DEPS if short == "slurm" else []
        _install_wheels(session, list(_wheels(session, *names).values()), *TEST_DEPS, *notebooks)
        module = DISTRIBUTIONS[short][1]
        session.run("python", "-c", f"import {module}")
        session.run("clustrix", "plugins")
        if _has_tests(ROOT / test_dir):
            # exit code 5: every test of the folder needs a testbed; they run in tests-all
            _pytest(session, "-q", "-m", SMOKE, test_dir, success_codes=[0, 5])

    tests.__doc__ = (
        f"Packaging smoke test of {DISTRIBUTIONS[short][0]}: installed from its wheel with clustrix-core"
        + "".join(f" and {DISTRIBUTIONS[n][0]}" for n in TEST_ALSO_NEEDS.get(short, []))
        + f" only, it imports, registers, and passes the tests of {test_dir} that need no testbed."
    )


for _short in DISTRIBUTIONS:
    _make_dist_tests(_short)


@nox.session(name="tests-core-pythons", python=[v for v in CORE_PYTHONS if v != PYTHON])
@timed
def tests_core_pythons(session: nox.Session) -> None:
    """Run tests/core (the runner's tests included) on every other supported Python; tests-core runs PYTHON.

    Only core and the test plugin: the testbeds and the other plugins run once, on PYTHON.
    """
    names = ["core", "testsched"] if "testsched" in _local_projects() else ["core"]
    # a wheel is the same for every Python (py3-none-any): built once per nox run
    _install_wheels(session, list(_wheels(session, *names).values()), *TEST_DEPS)
    _pytest(session, "tests/core")


def _side_by_side() -> list[str]:
    """pytest-xdist workers for tests-all: each testbed's tests run in one worker, in order (tests/conftest.py
    groups them), the testbeds side by side, the tests that need none spread over all workers.
    ``CLUSTRIX_TEST_WORKERS=0`` runs everything in one process, as before."""
    workers = os.environ.get("CLUSTRIX_TEST_WORKERS", "4")
    return [] if workers == "0" else ["-n", workers, "--dist", "loadgroup"]


@nox.session(name="tests-all", python=PYTHON)
@timed
def tests_all(session: nox.Session) -> None:
    """Run the whole test suite once, every end-to-end and conformance test included, with everything installed."""
    if not _has_tests(ROOT / "tests"):
        session.skip("tests/ has no tests yet")
    _install_wheels(session, list(_wheels(session).values()), *TEST_DEPS, *NOTEBOOK_DEPS)
    if os.geteuid() == 0:
        # OpenPBS is compiled once per source snapshot (minutes on 2 cores, then cached): before pytest,
        # so no test's timeout covers it; if it fails here, the PBS fixtures fail with the reason
        session.run("python", "-m", "tests.testbed.openpbs", "build", success_codes=[0, 1])
    # `nox -s tests-all -- tests/slurm/test_x.py -x` runs just those paths; without a path, all of tests/
    named_paths = any(arg.startswith("tests") and not arg.startswith("-") for arg in session.posargs)
    _pytest(session, *_side_by_side(), *([] if named_paths else ["tests"]))


def _lint_targets() -> list[str]:
    targets = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("clustrix-*/src") if p.is_dir())
    return [*targets, "tests", "benchmarks", "noxfile.py", "docs/conf.py"]


@nox.session(python=PYTHON)
@timed
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the sources, the tests and this file."""
    session.install(RUFF)
    targets = _lint_targets()
    session.run("ruff", "check", *targets, *session.posargs)
    session.run("ruff", "format", "--check", *targets)


@nox.session(python=PYTHON)
@timed
def types(session: nox.Session) -> None:
    """mypy over each distribution's src, against the others installed as wheels."""
    _install_wheels(session, list(_wheels(session, *_dist_names()).values()), MYPY, TYPES_PARAMIKO, "tomli")
    failed = []
    for path, _ in DISTRIBUTIONS.values():
        src = ROOT / path / "src"
        if src.is_dir():
            # each distribution alone: its imports of the others resolve to the installed wheels (py.typed)
            try:
                session.run("mypy", str(src.relative_to(ROOT)), *session.posargs)
            except CommandFailed:
                failed.append(path)
    if failed:
        session.error(f"mypy found errors in: {', '.join(failed)}")


@nox.session(python=PYTHON)
@timed
def docs(session: nox.Session) -> None:
    """Build the HTML docs with warnings as errors; autodoc imports the installed wheels."""
    _install_wheels(session, list(_wheels(session, *_dist_names()).values()), "-r", "docs/requirements.txt")
    out = ROOT / "docs" / "_build" / "html"
    shutil.rmtree(out, ignore_errors=True)
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", str(out), *session.posargs)


@nox.session(python=PYTHON)
@timed
def build(session: nox.Session) -> None:
    """Build every sdist and a wheel from it into dist/, install all wheels together, run `clustrix plugins`."""
    out = ROOT / "dist"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    for short, (path, _) in DISTRIBUTIONS.items():
        project = ROOT / path
        if not (project / "pyproject.toml").exists():
            session.error(f"{path}/pyproject.toml is missing: {short} cannot be built")
        _build(session, project, out, sdist=True)
    wheels = sorted(out.glob("*.whl"))
    sdists = sorted(out.glob("*.tar.gz"))
    if len(wheels) != len(DISTRIBUTIONS) or len(sdists) != len(DISTRIBUTIONS):
        session.error(f"expected {len(DISTRIBUTIONS)} wheels and sdists in dist/, found {wheels} and {sdists}")
    _install_wheels(session, wheels)
    imports = ", ".join(module for _, module in DISTRIBUTIONS.values())
    session.run("python", "-c", f"import {imports}")
    session.run("clustrix", "plugins")


@nox.session(python=PYTHON)
@timed
def bench(session: nox.Session) -> None:
    """Run every benchmarks/bench_*.py; each writes benchmarks/results/<name>.json and prints a table.

    Every distribution is installed (the remote benchmarks need their testbeds, which
    tests/testbed starts), plus the libraries compared against: joblib, submitit.
    """
    scripts = sorted((ROOT / "benchmarks").glob("bench_*.py"))
    if not scripts:
        session.skip("benchmarks/ has no bench_*.py yet")
    _install_wheels(session, list(_wheels(session).values()), "joblib", "submitit", "pytest", "attrs")
    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    for script in scripts:
        name = script.stem.removeprefix("bench_")
        session.run("python", str(script), "--output", f"benchmarks/results/{name}.json", *session.posargs)


@nox.session(python=PYTHON)
@timed
def example(session: nox.Session) -> None:
    """Run examples/quickstart.py against an installed clustrix-core."""
    script = ROOT / "examples" / "quickstart.py"
    if not script.exists():
        session.skip("examples/quickstart.py does not exist yet")
    _install_wheels(session, [_wheels(session, "core")["core"]])
    session.run("python", str(script), *session.posargs)
