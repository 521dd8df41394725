"""User projects for the "your code on the cluster" tests, written to disk and run as real programs.

The two-file project is ``mylib.py`` (``@cluster def run(x): return helper(x) + 1``) plus a
package ``mypkg`` with a relative import and a data file read through ``importlib.resources``,
and ``main.py``, run as ``python main.py`` so that ``mylib`` is a real top-level module
that exists only in the project folder. The editable project is a distribution installed
with ``pip install -e`` into a fresh venv, depending on ``sortedcontainers``.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

MYLIB = '''\
"""{token}"""
import mypkg
from clustrix import cluster


class Point:
    def __init__(self, x):
        self.x = x


def helper(x):
    return x * {factor}


@cluster
def run(x):
    return helper(x) + 1


@cluster
def greet():
    return mypkg.shout()


@cluster
def moved(point):
    return Point(point.x + 1)
'''

MAIN = """\
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from clustrix import cluster, configure
configure(**json.loads(sys.argv[1]))
import mylib

moved = mylib.moved(mylib.Point(3))
print(json.dumps({
    "run": mylib.run(4),
    "map": mylib.run.map(range(3)),
    "greet": mylib.greet(),
    "moved": [type(moved) is mylib.Point, moved.x],
    "decorated_after_import": cluster(mylib.helper)(4),
}))
"""


def write_project(folder: Path, *, factor: int = 10) -> Path:
    """The two-file project (plus ``mypkg``) in ``folder``; a unique token makes its content new."""
    (folder / "mypkg").mkdir(parents=True, exist_ok=True)
    (folder / "mypkg" / "__init__.py").write_text("from .core import shout\n")
    (folder / "mypkg" / "core.py").write_text(
        "import importlib.resources\n\n\ndef shout():\n"
        "    return importlib.resources.files(__package__).joinpath('data.txt').read_text().strip()\n"
    )
    (folder / "mypkg" / "data.txt").write_text(f"hello from mypkg {uuid.uuid4().hex}\n")
    set_factor(folder, factor)
    (folder / "main.py").write_text(MAIN)
    return folder


def run_and_change(folder: Path, options: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the two-file project, check every result, edit ``mylib.py`` and run it again.

    Returns the ``code_shipped`` events of both runs (one per job: a map ships once).
    """
    result, first = run_main(folder, options)
    assert result["run"] == 41
    assert result["map"] == [1, 11, 21]
    assert result["decorated_after_import"] == 40  # cluster(mylib.helper) applied after the import
    assert result["greet"].startswith("hello from mypkg ")  # relative import + importlib.resources data file
    assert result["moved"] == [True, 4]  # a local class as argument and result
    assert len(first) == MAIN_JOBS  # one shipment per job: the map's calls share one
    assert {label.split("-")[0] for label in labels(first, "sent")} >= {"mylib", "mypkg"}
    set_factor(folder, 100)
    result, changed = run_main(folder, options)
    assert result["run"] == 401  # the next call runs the edited mylib.py (helper multiplies by 100)
    return first, changed


def set_factor(folder: Path, factor: int) -> None:
    """Rewrite ``mylib.py`` (a changed module: ``helper`` multiplies by ``factor``)."""
    (folder / "mylib.py").write_text(MYLIB.format(token=uuid.uuid4().hex, factor=factor))


def clean_env(home: Path) -> dict[str, str]:
    """The environment of a user program: its own HOME, config and registry; no CLUSTRIX_* or PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTRIX_") and k != "PYTHONPATH"}
    home.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), CLUSTRIX_CONFIG=str(home / "config.toml"), CLUSTRIX_DATA_DIR=str(home / "data"))
    return env


#: How many jobs one run of ``main.py`` submits (the ``.map()`` is one job).
MAIN_JOBS = 5


def run_main(
    folder: Path, options: dict[str, Any], *, python: str = sys.executable, script: str = "main.py"
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``python main.py OPTIONS`` in ``folder``; return its JSON output and its code_shipped log events."""
    proc = subprocess.run(
        [python, script, json.dumps(options)],
        cwd=folder,
        capture_output=True,
        text=True,
        env=clean_env(folder.parent / f"home-{folder.name}"),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), shipped_events(proc.stderr)


def shipped_events(log: str) -> list[dict[str, Any]]:
    """The ``clustrix.code_shipped`` events of a ``-v``/INFO log: their ``sent`` and ``reused`` lists."""
    events = []
    for line in log.splitlines():
        if "clustrix.code_shipped" in line:
            sent = re.search(r"sent=(\[[^\]]*\])", line)
            reused = re.search(r"reused=(\[[^\]]*\])", line)
            events.append(
                {
                    "sent": ast.literal_eval(sent.group(1)) if sent else [],
                    "reused": ast.literal_eval(reused.group(1)) if reused else [],
                }
            )
    return events


def labels(events: list[dict[str, Any]], key: str) -> set[str]:
    return {label for event in events for label in event[key]}


EDITABLE_BACKEND = '''\
"""A minimal in-tree PEP 517/660 backend: enough for pip to make a real editable install offline."""
import base64, hashlib, os, zipfile

NAME, VERSION = "myproj", "1.2.3"
METADATA = "Metadata-Version: 2.1\\nName: myproj\\nVersion: 1.2.3\\nRequires-Dist: sortedcontainers\\n"


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _wheel(directory, files):
    name = f"{NAME}-{VERSION}-py3-none-any.whl"
    info = f"{NAME}-{VERSION}.dist-info"
    files = {**files, f"{info}/METADATA": METADATA.encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\\nGenerator: inline\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"}
    record = [_record_line(k, v) for k, v in files.items()] + [f"{info}/RECORD,,"]
    with zipfile.ZipFile(os.path.join(directory, name), "w") as whl:
        for k, v in files.items():
            whl.writestr(k, v)
        whl.writestr(f"{info}/RECORD", "\\n".join(record) + "\\n")
    return name


def get_requires_for_build_editable(config_settings=None):
    return []


def prepare_metadata_for_build_editable(metadata_directory, config_settings=None):
    info = os.path.join(metadata_directory, f"{NAME}-{VERSION}.dist-info")
    os.makedirs(info)
    with open(os.path.join(info, "METADATA"), "w") as fh:
        fh.write(METADATA)
    return os.path.basename(info)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "src")
    return _wheel(wheel_directory, {"myproj.pth": (src + "\\n").encode()})


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise RuntimeError("only editable installs in this test project")
'''

EDITABLE_MAIN = """\
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from clustrix import cluster, configure
from myproj import ordered
configure(**json.loads(sys.argv[1]))

@cluster
def sort_remotely(items):
    import importlib.metadata
    return ordered(items), importlib.metadata.version("myproj")

print(json.dumps({"sorted": sort_remotely([3, 1, 2])}))
"""


def editable_install(root: Path) -> tuple[Path, Path]:
    """A venv (seeing this interpreter's packages) with ``myproj`` installed by ``pip install -e``.

    Returns the venv's python and the folder of ``main.py``. ``myproj`` depends on
    ``sortedcontainers``, which this interpreter has (hypothesis needs it).
    """
    project = root / "myproj"
    (project / "src" / "myproj").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [build-system]
            requires = []
            build-backend = "backend"
            backend-path = ["."]

            [project]
            name = "myproj"
            version = "1.2.3"
            dependencies = ["sortedcontainers"]
            """
        )
    )
    (project / "backend.py").write_text(EDITABLE_BACKEND)
    (project / "src" / "myproj" / "__init__.py").write_text(
        "from sortedcontainers import SortedList\n\n\ndef ordered(items):\n    return list(SortedList(items))\n"
    )
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    outer = [p for p in sys.path if p.endswith("site-packages")]
    # site.addsitedir, not a plain path line: the outer .pth files (editable installs) are read too
    Path(purelib, "zz_outer.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n" for p in outer))
    editable = ["-e", str(project)]
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-build-isolation", *editable],
        check=True,
        capture_output=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    driver = root / "driver"
    driver.mkdir()
    (driver / "main.py").write_text(EDITABLE_MAIN)
    return python, driver


def extension_module(folder: Path, prefix: str) -> tuple[str, ModuleType]:
    """Compile and import a real (empty) C extension ``<prefix>_<hex>`` in ``folder``: local code that cannot travel."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    source = folder / f"{name}.c"
    source.write_text(
        "#include <Python.h>\n"
        f'static struct PyModuleDef def = {{PyModuleDef_HEAD_INIT, "{name}", NULL, -1, NULL}};\n'
        f"PyMODINIT_FUNC PyInit_{name}(void) {{ return PyModule_Create(&def); }}\n"
    )
    built = folder / f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}"
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "a C compiler is needed to build the extension the refusal tests refuse"
    subprocess.run(
        [compiler, "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}", str(source), "-o", str(built)],
        check=True,
        capture_output=True,
    )
    return name, importlib.import_module(name)


def local_module(folder: Path, prefix: str, source: str) -> tuple[str, ModuleType]:
    """A new top-level module ``<prefix>_<hex>`` in ``folder`` (on sys.path), imported."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(source)
    return name, importlib.import_module(name)


def data_package(folder: Path, prefix: str, data: bytes) -> tuple[str, ModuleType]:
    """A new local package ``<prefix>_<hex>`` in ``folder`` (on sys.path) with ``VALUE = 1`` and a data file."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    (folder / name).mkdir()
    (folder / name / "__init__.py").write_text("VALUE = 1\n")
    (folder / name / "table.bin").write_bytes(data)
    return name, importlib.import_module(name)
