"""Every ```python block of the docs and README, and every script in examples/, runs as written.

A page's blocks run in order in one fresh interpreter, as one script (later blocks build
on earlier ones), with a temporary HOME and config and no ``CLUSTRIX_*`` variable of the
user's, so nothing of this machine's setup leaks in. A block that cannot run offline
says why, in an HTML comment on the lines just before it::

    <!-- skip-test: needs a SLURM cluster -->

and a block that needs a scheduler plugin names its distribution, so it runs where that
plugin is installed (``tests-all``) and is left out elsewhere (``tests-core``)::

    <!-- test-requires: clustrix-slurm -->

A script in examples/ that needs a cluster says so in a ``# skip-test: REASON`` line.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>skip-test|test-requires):(?P<value>.*?)-->\s*$")
_SCRIPT_SKIP = re.compile(r"^# skip-test:(?P<reason>.*)$", re.MULTILINE)
#: The longest a page's blocks may take together (the local executor starts its workers once).
TIMEOUT = 180


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT) if page.is_relative_to(ROOT) else page)


@dataclass
class Block:
    """One fenced ```python block: where it is, its lines, and its markers."""

    page: Path
    first: int  # 0-based index of the block's first code line in the page
    lines: list[str]
    skip: str | None = None
    requires: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{_page_id(self.page)}:{self.first}"


def parse_blocks(page: Path) -> list[Block]:
    """The page's ```python blocks with their markers; a marker not followed by one is a ``ValueError``."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    markers: list[tuple[int, str, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = _MARKER.match(line)
        fence = _FENCE.match(line)
        if marker:
            markers.append((i + 1, marker["kind"], marker["value"].strip()))
        elif fence:
            end = i + 1
            while end < len(lines) and not lines[end].startswith(fence["fence"]):
                end += 1
            language = fence["info"].strip().split(" ")[0]
            if language == "python":
                block = Block(page, i + 1, lines[i + 1 : end])
                for _, kind, value in markers:
                    if kind == "skip-test":
                        block.skip = value
                    else:
                        block.requires.extend(v.strip() for v in value.split(","))
                blocks.append(block)
            elif markers:
                raise ValueError(f"{_page_id(page)}:{markers[0][0]}: the marker is not before a ```python block")
            markers = []
            i = end
        elif line.strip() and markers:
            raise ValueError(f"{_page_id(page)}:{markers[0][0]}: the marker must be right before its ```python block")
        i += 1
    if markers:
        raise ValueError(f"{_page_id(page)}:{markers[0][0]}: the marker is not before a ```python block")
    return blocks


def page_script(page: Path, blocks: list[Block]) -> str:
    """The page as a Python script: its runnable blocks at their own line numbers, every other line blank.

    Tracebacks then name the page's own line, and ``inspect.getsource`` finds the code.
    """
    total = len(page.read_text(encoding="utf-8").splitlines())
    script = [""] * total
    for block in blocks:
        script[block.first : block.first + len(block.lines)] = block.lines
    return "\n".join(script) + "\n"


def isolated_env(home: Path) -> dict[str, str]:
    """This process's environment without the user's clustrix, SSH or Kubernetes setup, HOME in ``home``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CLUSTRIX_", "XDG_", "KUBE")) and name not in {"SSH_AUTH_SOCK", "PYTHONSTARTUP"}
    }
    for name in ("config", "data", "cache", "state"):
        (home / f".{name}").mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".data"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_STATE_HOME=str(home / ".state"),
        # the test plugin distribution ships a deliberately broken plugin: a user has none
        CLUSTRIX_DISABLE_PLUGINS="broken",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def run_script(script: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=work,
        env=isolated_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def _missing(distributions: list[str]) -> list[str]:
    missing = []
    for name in distributions:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


PAGES_WITH_CODE = [page for page in PAGES if parse_blocks(page)]


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=_page_id)
def test_docs_python_blocks_run_offline_in_order(page: Path, tmp_path: Path) -> None:
    """The page's blocks without a skip-test marker run, top to bottom, as one fresh script."""
    blocks = [block for block in parse_blocks(page) if block.skip is None]
    if not blocks:
        pytest.skip(f"every python block of {_page_id(page)} carries a skip-test marker")
    missing = _missing(sorted({name for block in blocks for name in block.requires}))
    blocks = [block for block in blocks if not set(block.requires) & set(missing)]
    if not blocks:
        pytest.skip(f"the python blocks of {_page_id(page)} need {', '.join(missing)} installed")
    script = tmp_path / f"{page.name}.py"
    script.write_text(page_script(page, blocks), encoding="utf-8")
    done = run_script(script, tmp_path)
    where = ", ".join(block.where for block in blocks)
    assert done.returncode == 0, f"the python blocks of {_page_id(page)} ({where}) failed:\n{done.stderr}"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_docs_skip_markers_give_a_reason(page: Path) -> None:
    """A block is skipped only by an explicit marker right before it, and the marker says why."""
    for block in parse_blocks(page):
        assert block.skip is None or len(block.skip) >= 10, f"{block.where}: say why the block cannot run offline"
        assert all(re.fullmatch(r"clustrix(-[a-z0-9]+)+", name) for name in block.requires), (
            f"{block.where}: test-requires names distributions, e.g. clustrix-slurm; got {block.requires}"
        )


def test_marker_parsing_binds_each_marker_to_the_next_python_block(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n<!-- skip-test: needs a SLURM cluster -->\n\n```python\nsubmit()\n```\n\n"
        "<!-- test-requires: clustrix-slurm -->\n```python\nx = 1\n```\n\n```python\nprint(x)\n```\n"
    )
    skipped, needs, plain = parse_blocks(page)
    assert (skipped.skip, skipped.lines) == ("needs a SLURM cluster", ["submit()"])
    assert (needs.skip, needs.requires) == (None, ["clustrix-slurm"])
    assert (plain.skip, plain.requires) == (None, [])
    assert page_script(page, [needs, plain]).splitlines()[10:15] == ["x = 1", "", "", "", "print(x)"]

    page.write_text("<!-- skip-test: needs a cluster -->\nSome prose.\n\n```python\nx = 1\n```\n")
    with pytest.raises(ValueError, match="right before"):
        parse_blocks(page)


def test_docs_blocks_do_not_see_the_users_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config file and CLUSTRIX_* variables of the user's are invisible to a docs block."""
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nfrom clustrix import get_config\n"
        "assert get_config().cluster_type == 'local', get_config().cluster_type\n```\n"
    )
    user_config = tmp_path / "user-config.toml"
    user_config.write_text('cluster_type = "slurm"\n')
    monkeypatch.setenv("CLUSTRIX_CONFIG", str(user_config))
    monkeypatch.setenv("CLUSTRIX_CLUSTER_TYPE", "slurm")
    script = tmp_path / "page.py"
    script.write_text(page_script(page, parse_blocks(page)))
    done = run_script(script, tmp_path)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_scripts_run_offline(example: Path, tmp_path: Path) -> None:
    """Each examples/ script runs on the local executor, unless a ``# skip-test:`` line says why not."""
    skip = _SCRIPT_SKIP.search(example.read_text(encoding="utf-8"))
    if skip:
        pytest.skip(skip["reason"].strip())
    done = run_script(example, tmp_path)
    assert done.returncode == 0, f"{example.relative_to(ROOT)} failed:\n{done.stderr}"
