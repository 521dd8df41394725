"""The shape of the code base: the limits issue 22 set, so the tree stays one a newcomer can read.

Sizes are counted in *code lines*: lines that hold code, not blank, comment or docstring lines.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import io
import pkgutil
import re
import tokenize
from pathlib import Path

import pytest

import clustrix

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "clustrix-core" / "src" / "clustrix"
SOURCES = sorted(ROOT.glob("clustrix-*/src"))
#: clustrix-ssh's transport side (paramiko, command lines, host keys, targets, its connection keys and
#: errors, and the package's public names, which are the transport's); the rest is the ssh backend.
SSH_TRANSPORT_SIDE = {
    "__init__.py", "transport.py", "connection.py", "hostkeys.py", "target.py", "command.py", "errors.py", "keys.py",
    "openssh.py", "login.py", "client.py",  # the OpenSSH transport, its master connections, the choice of client
    "prompt.py", "cli.py",  # the paramiko path's code prompt, clustrix login/logout and the doctor's lines
}  # fmt: skip


def code_lines(path: Path) -> int:
    """Lines of ``path`` that hold a token other than a comment, outside docstrings."""
    source = path.read_text()
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(n for n in range(token.start[0], token.end[0] + 1) if n not in docstrings)
    return len(lines)


def test_code_lines_count_code_and_not_docstrings_comments_or_blanks(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    lines = ['"""Module.', "", 'More."""', "", "# a comment", "x = 1  # trailing", "", ""]
    lines += ["def f():", '    """Doc."""', "    return (", "        x", "    )", ""]
    sample.write_text("\n".join(lines))
    assert code_lines(sample) == 5  # x = 1; def f():; the return's three lines


def test_core_has_at_most_twelve_entries_at_the_top_level() -> None:
    entries = sorted(
        p.name for p in CORE.iterdir() if (p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").exists())
    )
    assert len(entries) <= 12, f"clustrix/ holds {len(entries)} modules and packages: {entries}"


def test_no_core_module_is_over_400_code_lines() -> None:
    big = {str(p.relative_to(CORE)): n for p in CORE.rglob("*.py") if (n := code_lines(p)) > 400}
    assert not big, f"core modules over 400 code lines: {big}"


def test_at_most_five_untyped_configs_each_with_its_reason() -> None:
    found = [
        (str(p.relative_to(ROOT)), number, line.strip())
        for src in SOURCES
        for p in src.rglob("*.py")
        for number, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"\bconfig: Any\b", line)
    ]
    assert len(found) <= 5, f"{len(found)} `config: Any` annotations: {found}"
    unexplained = [f for f in found if "#" not in f[2]]
    assert not unexplained, f"`config: Any` without a comment saying why: {unexplained}"


def test_the_ssh_backend_pipeline_is_at_most_150_code_lines() -> None:
    package = ROOT / "clustrix-ssh" / "src" / "clustrix_ssh"
    sizes = {p.name: code_lines(p) for p in package.glob("*.py") if p.name not in SSH_TRANSPORT_SIDE}
    assert sum(sizes.values()) <= 150, f"the ssh backend's own code is {sum(sizes.values())} code lines: {sizes}"


def test_the_reference_queue_plugin_stays_at_most_80_code_lines() -> None:
    package = ROOT / "tests" / "plugins" / "clustrix-tsp" / "src"
    total = sum(code_lines(p) for p in package.rglob("*.py"))
    assert total <= 80, f"the tsp reference plugin is {total} code lines"


def _core_modules() -> list[str]:
    return [
        info.name
        for info in pkgutil.walk_packages(clustrix.__path__, "clustrix.")
        if info.name not in {"clustrix.__main__"}
    ]


#: Exceptions that are not errors clustrix raises: the carrier of a remote traceback (only ever a
#: ``__cause__``), and what the runner raises on a compute node, where it runs as a lone file
#: without the clustrix package (see ``clustrix.batch.engine.RUNNER_NAME``).
NOT_RAISED_HERE = {"clustrix.errors.RemoteTraceback", "clustrix.remote.runner.UnsafePathError"}


@pytest.mark.parametrize("module", _core_modules())
def test_every_core_exception_lives_in_clustrix_errors_and_is_a_clustrix_error(module: str) -> None:
    from clustrix.errors import ClustrixError

    mod = importlib.import_module(module)
    for name, value in vars(mod).items():
        if not (inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module):
            continue
        if issubclass(value, Warning) or f"{module}.{name}" in NOT_RAISED_HERE:
            continue  # warnings are categories, not errors
        assert module == "clustrix.errors", f"{module}.{name}: core's exceptions belong in clustrix.errors"
        assert issubclass(value, ClustrixError), f"clustrix.errors.{name} is not a ClustrixError"
