"""Wheels for a remote side with no package index: the remote Python's tags, and the wheel caches (issue 20).

The tag tests are pure. The cache tests build real venvs through the local transport (the
"remote" side is this machine, told ``remote_index="none"``) from small wheels made here and
placed in the download folder, so no index is asked; the testbeds' tests (tests/pbs/test_no_index.py,
tests/slurm/test_no_index_slurm.py) download real wheels for hosts with no route out.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
import zipfile
from pathlib import Path
from typing import Any

import pytest

from clustrix.config.settings import resolve_config
from clustrix.errors import NoWheelError
from clustrix.plugin.transport import LocalTransport
from clustrix.remote import scripts as remote_script
from clustrix.remote.environment.capture import environment_hash
from clustrix.remote.environment.prepare import forget_prepared, prepare_remote_environment
from clustrix.remote.environment.target import PROBE, Target, parse_target, target_from_facts
from clustrix.remote.environment.venv import render_receive_checked
from clustrix.remote.environment.wheelhouse import download_wheels, index_environment

GLIBC_311 = {
    "impl": "cpython",
    "version": [3, 11],
    "soabi": "cpython-311-x86_64-linux-gnu",
    "platform": "linux-x86_64",
    "libc": ["glibc", "2.36"],
    "gil_disabled": False,
}


def test_a_glibc_cpython_gets_every_manylinux_tag_down_to_manylinux1_most_specific_first() -> None:
    target = target_from_facts(GLIBC_311)
    assert target.implementation == "cp" and target.python_version == "3.11" and target.abis == ("cp311",)
    assert target.platforms[0] == "manylinux_2_36_x86_64" and target.platforms[-1] == "linux_x86_64"
    for tag in ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"):
        assert tag in target.platforms
    options = target.pip_options()
    assert options[:2] == ["--platform", "manylinux_2_36_x86_64"]
    assert options[-6:] == ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]


def test_aarch64_has_no_manylinux2010_or_1_and_free_threading_musl_and_pypy_get_their_abis() -> None:
    arm = target_from_facts({**GLIBC_311, "platform": "linux-aarch64", "libc": ["glibc", "2.28"]})
    assert "manylinux2014_aarch64" in arm.platforms and not any("2010" in p or "linux1" in p for p in arm.platforms)
    assert target_from_facts({**GLIBC_311, "version": [3, 13], "gil_disabled": True}).abis == ("cp313t",)
    musl = target_from_facts({**GLIBC_311, "libc": ["", ""]})
    assert musl.platforms[0] == "musllinux_1_2_x86_64" and "manylinux_2_17_x86_64" not in musl.platforms
    pypy = target_from_facts(
        {**GLIBC_311, "impl": "pypy", "version": [3, 10], "soabi": "pypy310-pp73-x86_64-linux-gnu"}
    )
    assert (pypy.implementation, pypy.abis) == ("pp", ("pypy310_pp73",))


@pytest.mark.parametrize(
    ("filename", "accepted"),
    [
        ("numpy-2.2.6-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", True),
        ("numpy-2.2.6-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", False),
        ("numpy-2.2.6-cp311-cp311-manylinux_2_39_x86_64.whl", False),  # needs a newer glibc
        ("numpy-2.2.6-cp311-cp311-win_amd64.whl", False),
        ("numpy-2.2.6-cp311-cp311-musllinux_1_2_x86_64.whl", False),
        ("cryptography-44.0.0-cp39-abi3-manylinux_2_28_x86_64.whl", True),
        ("attrs-25.1.0-py3-none-any.whl", True),
        ("six-1.17.0-py2.py3-none-any.whl", True),
        ("mypkg-1.0-1-py3-none-any.whl", True),  # a build tag
        ("docopt-0.6.2.tar.gz", False),
    ],
)
def test_a_wheel_is_accepted_by_its_tags_as_pip_would(filename: str, accepted: bool) -> None:
    assert target_from_facts(GLIBC_311).accepts(filename) is accepted


def test_the_probe_line_is_read_from_a_scripts_output_with_whether_the_index_answered() -> None:
    facts = {**GLIBC_311, "index": "https://pypi.org/simple/", "reachable": False}
    out = f"clustrix-env: need-wheel x\nclustrix-env: target {json.dumps(facts)}\nclustrix-env: index unreachable\n"
    target = parse_target(out)
    assert target is not None and target.reachable is False and target.index == "https://pypi.org/simple/"
    assert parse_target("clustrix-env: ready /x/bin/python\n") is None
    assert parse_target("clustrix-env: target {not json\n") is None


def test_the_index_settings_go_to_pip_and_uv_as_variables_never_as_arguments() -> None:
    config = {
        "pip_index_url": "https://user:secret@mirror.site/simple",
        "pip_extra_index_url": ["https://a/simple", "https://b/simple"],
        "pip_trusted_host": "mirror.site",
    }
    there = index_environment(config)
    assert there["PIP_INDEX_URL"] == there["UV_INDEX_URL"] == "https://user:secret@mirror.site/simple"
    assert there["PIP_EXTRA_INDEX_URL"] == "https://a/simple https://b/simple"
    assert there["PIP_TRUSTED_HOST"] == there["UV_INSECURE_HOST"] == "mirror.site"
    assert index_environment({}) == {}
    from clustrix.remote.environment.venv import render_build_script

    script = render_build_script(
        work_dir="/w", key="k", requirement_lines=[], python_version="3.11", probe="check", wheelhouse="/w/h",
        index_url=config["pip_index_url"], index_environment=there,
    )  # fmt: skip
    probe_line = next(line for line in script.splitlines() if "CX_INDEX_URL=" in line)
    assert probe_line.startswith("  cx_index=0; CX_INDEX_URL=https://user:secret@mirror.site/simple python3 -I -c")


def test_a_wheel_whose_bytes_do_not_match_its_hash_is_not_stored(tmp_path: Path) -> None:
    target = tmp_path / "w" / "x-1.0-py3-none-any.whl"
    target.parent.mkdir()
    data = b"wheel bytes"
    line = render_receive_checked(str(target), hashlib.sha256(b"other bytes").hexdigest(), len(data))
    result = remote_script.run_script(LocalTransport(), line, data)
    assert result.returncode == 43 and "arrived damaged" in result.stderr and not target.exists()
    good = render_receive_checked(str(target), hashlib.sha256(data).hexdigest(), len(data))
    assert remote_script.run_script(LocalTransport(), good, data).ok and target.read_bytes() == data


# -- the caches, through a real shell ------------------------------------------------------------------


def make_wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal valid pure wheel of ``name`` with one module."""
    tag = f"{name}-{version}"
    files = {
        f"{name}.py": f"VERSION = {version!r}\n".encode(),
        f"{tag}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{tag}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for arcname, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{arcname},sha256={digest},{len(data)}")
    record.append(f"{tag}.dist-info/RECORD,,")
    path = folder / f"{tag}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for arcname, data in files.items():
            archive.writestr(arcname, data)
        archive.writestr(f"{tag}.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def snapshot(*dists: tuple[str, str]) -> dict[str, Any]:
    entries = [{"name": name, "version": version, "source": "pypi"} for name, version in dists]
    return {"python": "3.11", "distributions": entries, "hash": environment_hash("3.11", entries)}


def this_machine() -> Target:
    """The target of the python3 on PATH here, as the build script's probe reads it (3.10 in a 3.10 session)."""
    probe = remote_script.run_script(LocalTransport(), f"python3 -I -c {shlex.quote(PROBE)} '' 0")
    target = parse_target(probe.stdout)
    assert target is not None
    return target


@pytest.fixture
def downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The client's download folder for this machine's python3, with the wheels the tests need already in it."""
    monkeypatch.setattr("platformdirs.user_cache_dir", lambda name: str(tmp_path / "cache" / name))
    folder = tmp_path / "cache" / "clustrix" / "downloads" / this_machine().key
    folder.mkdir(parents=True)
    for name, version in (("cxfake", "1.0"), ("cxfake", "2.0"), ("cxother", "1.0")):
        make_wheel(folder, name, version)
    forget_prepared()
    yield folder
    forget_prepared()


def test_wheels_already_downloaded_here_are_reused_without_asking_an_index(downloads: Path) -> None:
    target = this_machine()
    wheels, refused = download_wheels(["cxfake==1.0", "cxother==1.0"], target, {}, host="h")
    assert refused == [] and [w.path.name for w in wheels] == [
        "cxfake-1.0-py3-none-any.whl",
        "cxother-1.0-py3-none-any.whl",
    ]
    assert wheels[0].sha256 == hashlib.sha256(wheels[0].path.read_bytes()).hexdigest()


def test_a_host_gets_each_wheel_once_shared_by_every_environment_and_a_changed_pin_ships_one(
    downloads: Path, tmp_path: Path
) -> None:
    work = tmp_path / "remote"
    config = resolve_config(
        overrides={"cluster_type": "ssh", "cluster_host": "h", "remote_work_dir": str(work), "remote_index": "none",
                   "allow_python_mismatch": True}
    )  # fmt: skip
    transport = LocalTransport()
    first = prepare_remote_environment(transport, config, snapshot(("cxfake", "1.0")))
    assert first.built and first.shipped_wheels == ("cxfake-1.0-py3-none-any.whl",)
    assert transport.run([first.python, "-c", "import cxfake; print(cxfake.VERSION)"]).stdout.strip() == "1.0"
    stored = list((work / "wheelhouse").glob("*/*.whl"))
    assert [p.parent.name for p in stored] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in stored]
    assert all(p.stat().st_mode & 0o077 == 0 for p in [work / "wheelhouse", *(p.parent for p in stored)])

    forget_prepared()  # a new process, the same environment: the venv is there, nothing ships
    again = prepare_remote_environment(transport, config, snapshot(("cxfake", "1.0")))
    assert not again.built and again.shipped_wheels == ()

    forget_prepared()  # another environment sharing cxfake 1.0: only cxother travels
    other = prepare_remote_environment(transport, config, snapshot(("cxfake", "1.0"), ("cxother", "1.0")))
    assert other.built and other.shipped_wheels == ("cxother-1.0-py3-none-any.whl",)

    forget_prepared()  # a changed pin: one wheel
    changed = prepare_remote_environment(transport, config, snapshot(("cxfake", "2.0"), ("cxother", "1.0")))
    assert changed.shipped_wheels == ("cxfake-2.0-py3-none-any.whl",)
    assert transport.run([changed.python, "-c", "import cxfake; print(cxfake.VERSION)"]).stdout.strip() == "2.0"


def test_a_distribution_with_no_wheel_here_or_on_the_index_is_named_with_the_fixes(
    downloads: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an index that has nothing: a find-links folder with no files, and no other index
    empty = tmp_path / "empty-index"
    empty.mkdir()
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    config = resolve_config(
        overrides={"cluster_type": "ssh", "cluster_host": "h", "remote_work_dir": str(tmp_path / "r"),
                   "remote_index": "none", "allow_python_mismatch": True, "pip_index_url": empty.as_uri()}
    )  # fmt: skip
    with pytest.raises(NoWheelError) as err:
        prepare_remote_environment(LocalTransport(), config, snapshot(("cxfake", "1.0"), ("cxmissing", "0.1")))
    message = str(err.value)
    assert "cxmissing==0.1" in message and "cxfake" not in message.split(":")[1]
    assert "Nothing was submitted" in message and "python_executable=" in message and "module_loads=" in message
    assert not (tmp_path / "r" / "envs").exists() or not any((tmp_path / "r" / "envs").iterdir())


def test_a_local_project_built_here_with_a_c_extension_for_another_platform_is_named(
    downloads: Path, tmp_path: Path
) -> None:
    built = make_wheel(tmp_path, "cext", "1.0")
    foreign = built.with_name("cext-1.0-cp311-cp311-win_amd64.whl")
    built.rename(foreign)
    local = {"name": "cext", "version": "1.0", "source": "local", "path": str(foreign), "digest": "0123456789abcdef"}
    snap = snapshot(("cxfake", "1.0"))
    snap["distributions"].append(local)
    config = resolve_config(
        overrides={"cluster_type": "ssh", "cluster_host": "h", "remote_work_dir": str(tmp_path / "r"),
                   "remote_index": "none", "allow_python_mismatch": True}
    )  # fmt: skip
    with pytest.raises(NoWheelError, match=r"cext \(built here, a wheel for this machine only\)"):
        prepare_remote_environment(LocalTransport(), config, snap)


def test_the_build_script_passes_the_index_keys_there_or_installs_the_shipped_files_with_no_index() -> None:
    from clustrix.remote.environment.venv import render_build_script

    common: dict[str, Any] = {"work_dir": "/home/u/.clustrix", "key": "k", "python_version": "3.11"}
    there = render_build_script(
        requirement_lines=["numpy==2.2.6"], index_environment={"PIP_INDEX_URL": "https://mirror/simple"}, **common
    )
    assert "export PIP_INDEX_URL=https://mirror/simple" in there and "--no-index" not in there
    shipped = ["/home/u/.clustrix/wheelhouse/" + "a" * 64 + "/numpy-2.2.6-cp311-cp311-manylinux_2_17_x86_64.whl"]
    offline = render_build_script(
        requirement_lines=["numpy==2.2.6"], index_wheels=shipped, wheelhouse="/home/u/.clustrix/wheelhouse",
        index_environment={"PIP_INDEX_URL": "https://mirror/simple"}, **common,
    )  # fmt: skip
    assert (
        "pip install --quiet --no-index --no-deps" in offline
        and "uv pip install --quiet --offline --no-index" in offline
    )
    assert "PIP_INDEX_URL" not in offline and shipped[0] in offline and "numpy==2.2.6" not in offline
    probing = render_build_script(requirement_lines=[], probe="check", wheelhouse="/w", **common)
    assert probing.index("clustrix-env: python-mismatch") < probing.index("clustrix-env: target")


def test_a_vcs_requirement_is_refused_without_asking_pip(downloads: Path) -> None:
    line = "mylib @ git+https://example.invalid/mylib@0123abcd"
    wheels, refused = download_wheels(["cxfake==1.0", line], this_machine(), {}, host="h")
    assert [w.path.name for w in wheels] == ["cxfake-1.0-py3-none-any.whl"] and refused == [line]


def test_without_pip_in_this_python_a_pip_on_path_downloads_and_without_either_the_error_says_how(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util
    import sys

    from clustrix.errors import EnvironmentBuildError
    from clustrix.remote.environment import wheelhouse

    if importlib.util.find_spec("pip") is not None:
        assert wheelhouse.pip_here() == [sys.executable, "-m", "pip"]
    # a venv made by uv (as nox makes them) has no pip of its own
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pip" else real_find_spec(name, *a)
    )
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "pip3").write_text("#!/bin/sh\nexit 0\n")
    (shim / "pip3").chmod(0o755)
    monkeypatch.setenv("PATH", str(shim))
    assert wheelhouse.pip_here() == [str(shim / "pip3")]
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(EnvironmentBuildError, match=r"no pip and none is on PATH: install it \(`python -m ensurepip`"):
        wheelhouse.pip_here()
