"""Files clustrix writes on the user's machine are private and never written through a link.

``clustrix result -o FILE`` creates FILE new, mode 0600 (``O_CREAT|O_EXCL|O_NOFOLLOW``), and
replaces an existing one only with ``--force``, by rename, so a planted link is replaced,
never followed. The cache of wheels built from the user's local code is 0700.
"""

from __future__ import annotations

import os
import pickle
import stat
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from clustrix import cluster
from clustrix.remote.environment.wheels import build_local_wheel
from tests.testbed.cousers import as_mallory


def clustrix(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "clustrix.cli", *args], capture_output=True, text=True, timeout=120)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """022, what most users have: the old code left results and cache folders readable by all."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def finished_job(tmp_path: Path) -> str:
    @cluster(cluster_type="subprocess", remote_work_dir=str(tmp_path / "work"))
    def secret_result() -> dict[str, str]:
        return {"token": "the result is private"}

    future = secret_result.submit()
    assert future.result(timeout=60) == {"token": "the result is private"}
    return future.job_id


def test_result_to_a_file_creates_it_private(finished_job: str, tmp_path: Path) -> None:
    out = tmp_path / "result.pkl"
    done = clustrix("result", finished_job, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert mode(out) == 0o600
    assert pickle.loads(out.read_bytes()) == {"token": "the result is private"}


def test_result_to_an_existing_file_is_refused_unless_forced(finished_job: str, tmp_path: Path) -> None:
    out = tmp_path / "result.pkl"
    out.write_text("precious")
    out.chmod(0o644)
    refused = clustrix("result", finished_job, "-o", str(out))
    assert refused.returncode == 1
    assert "already exists" in refused.stderr and "--force" in refused.stderr
    assert out.read_text() == "precious"
    forced = clustrix("result", finished_job, "-o", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert mode(out) == 0o600
    assert pickle.loads(out.read_bytes()) == {"token": "the result is private"}


def test_result_to_a_link_a_co_user_planted_never_writes_through_it(
    finished_job: str, tmp_path: Path, mallory: Path
) -> None:
    """mallory links the name the user will write to (in a shared folder) to a file of the user's."""
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's own file")
    link = mallory / "result.pkl"
    assert as_mallory(f"ln -s {victim} {link}").returncode == 0
    refused = clustrix("result", finished_job, "-o", str(link))
    assert refused.returncode == 1 and "already exists" in refused.stderr
    assert victim.read_text() == "the user's own file"
    forced = clustrix("result", finished_job, "-o", str(link), "--force")
    assert forced.returncode == 0, forced.stderr
    assert victim.read_text() == "the user's own file"  # the link was replaced, not followed
    assert not link.is_symlink() and mode(link) == 0o600


def test_the_wheel_cache_of_local_code_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "cache" / "clustrix"
    root.mkdir(parents=True, mode=0o755)  # as an older clustrix left it
    wheel = tmp_path / "mine-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("mine.py", "SECRET_ALGORITHM = 1\n")
    built = build_local_wheel({"name": "mine", "digest": "abc", "path": str(wheel), "source": "local"})
    assert built.path.read_bytes() == wheel.read_bytes()
    for directory in (root, root / "wheels", built.path.parent):
        assert mode(directory) == 0o700, f"{directory} is {oct(mode(directory))}"
