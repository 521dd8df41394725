"""The remote venv: its key, its pinned requirements, and the script that builds it once (pure).

One venv is built per environment key under ``<remote_work_dir>/envs/<key>`` from the pinned
requirements, with uv when the remote has it, else ``python3 -m venv`` + pip, under a lock,
and reused from then on (a marker file is written last). Distributions installed here from a
local path are unpacked from wheels (:mod:`clustrix.remote.environment.wheels`) into
``<remote_work_dir>/local/<name>-<digest>``, put first on the job's ``PYTHONPATH``.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from clustrix.remote import scripts as remote_script
from clustrix.remote.environment.interpreter import BUILD_FAILED_EXIT, render_version_check
from clustrix.remote.environment.target import PROBE

READY_MARKER = ".clustrix-ready"
#: The build script's exit status when local wheels must be sent (see :func:`render_build_script`).
NEED_WHEELS_EXIT = 45


def environment_key(snapshot: Mapping[str, Any], base_lines: Sequence[str]) -> str:
    """The venv's directory name: the snapshot hash plus what chose the base interpreter.

    ``environment_variables`` are left out: changing one must not rebuild the venv.
    """
    text = json.dumps([snapshot.get("hash", ""), list(base_lines)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def requirements(snapshot: Mapping[str, Any]) -> list[str]:
    """The pinned requirement lines the venv is built from (local sources are overlays)."""
    lines = []
    for dist in snapshot.get("distributions", []):
        if dist["source"] == "pypi":
            lines.append(f"{dist['name']}=={dist['version']}")
        elif dist["source"] in {"vcs", "url"}:
            lines.append(dist["requirement"])
    return lines


def render_build_script(
    *,
    work_dir: str,
    key: str,
    requirement_lines: Sequence[str],
    python_version: str | None,
    activation: Sequence[str] = (),
    base_python: str = "python3",
    allow_mismatch: bool = False,
    overlays: Sequence[tuple[str, str]] = (),
    shipped: Sequence[tuple[str, int]] = (),
    probe: str | None = None,
    index_url: str = "",
    index_environment: Mapping[str, str] | None = None,
    wheelhouse: str | None = None,
    index_wheels: Sequence[str] = (),
    received: Sequence[tuple[str, str, int]] = (),
) -> str:
    """The POSIX sh script that makes ``<work_dir>/envs/<key>`` exist and be complete.

    ``work_dir`` must be absolute (expanded). Before anything is written or run, the work
    dir and every directory used below it is checked (see :mod:`clustrix.remote.scripts`).
    ``shipped`` are (remote wheel path, size) pairs whose bytes follow the script on stdin,
    in order. ``overlays`` are (remote wheel path, target dir) pairs unpacked with the
    venv's Python if the target is missing; a wheel that is needed but neither shipped nor
    there makes the script print ``clustrix-env: need-wheel LABEL`` lines and exit
    :data:`NEED_WHEELS_EXIT` before building anything. Prints ``clustrix-env: ready PATH``
    with the venv's python on success.

    The package index: with ``probe`` (``"check"`` or ``"tags"``), a venv that must be built
    first runs :data:`~clustrix.remote.environment.target.PROBE` with ``python3`` (its
    ``clustrix-env: target`` line); when the index does not answer (or ``probe`` is ``"tags"``)
    the script lists the wheels in ``wheelhouse`` (``clustrix-env: have PATH``) and exits
    :data:`NEED_WHEELS_EXIT` too. ``received`` are (remote path, sha256, size) of index wheels
    whose bytes follow the local ones on stdin, each stored only if its hash matches;
    with ``index_wheels`` (remote paths) the venv is built from those files with no index.
    ``index_environment`` (``PIP_INDEX_URL``...) is exported for a build from an index.
    """
    q = shlex.quote
    envs = posixpath.join(work_dir, "envs")
    env_dir = posixpath.join(envs, key)
    py = q(base_python)
    subdirs = [envs]
    if overlays:
        subdirs += [posixpath.join(work_dir, "wheels"), posixpath.join(work_dir, "local")]
    if wheelhouse:
        subdirs.append(wheelhouse)
    lines = [remote_script.CHECK_FUNCTIONS, *remote_script.render_work_dir_check(work_dir, subdirs)]
    existing = [env_dir] + [p for wheel, target in overlays for p in (posixpath.dirname(wheel), target)]
    existing += sorted({posixpath.dirname(w) for w in index_wheels})
    lines.append("cx_existing " + " ".join(q(p) for p in existing))
    for wheel, size in shipped:
        lines.append(f"cx_mkdir {q(posixpath.dirname(wheel))}")
        lines.append(remote_script.render_receive(wheel, size))
    for wheel, sha256, size in received:
        lines.append(f"cx_mkdir {q(posixpath.dirname(wheel))}")
        lines.append(render_receive_checked(wheel, sha256, size))
    lines += [
        "exec </dev/null",  # the rest (module, conda, the user's commands) must not read the data
        *activation,
        render_version_check(py, python_version, allow_mismatch=allow_mismatch),
    ]
    lines.append('need=""')
    if overlays:
        for wheel, target in overlays:
            label = posixpath.basename(posixpath.dirname(wheel))
            lines.append(
                f"[ -f {q(posixpath.join(target, READY_MARKER))} ] || [ -f {q(wheel)} ] || "
                f"{{ echo {q('clustrix-env: need-wheel ' + label)}; need=1; }}"
            )
    if probe:
        lines += render_probe(py, probe, index_url, wheelhouse or posixpath.join(work_dir, "wheelhouse"), env_dir)
    lines.append(f'[ -z "$need" ] || exit {NEED_WHEELS_EXIT}')
    if index_wheels:
        requirement_lines = list(index_wheels)
        uv_venv, uv_options, pip_options = "--offline ", "--offline --no-index ", "--no-index "
    else:
        lines += [f"export {name}={q(value)}" for name, value in (index_environment or {}).items()]
        uv_venv = uv_options = pip_options = ""
    lines += [
        f"env_dir={q(env_dir)}",
        'lock="$env_dir.lock"',
        'log="$env_dir.log"',
        f'if [ ! -f "$env_dir/{READY_MARKER}" ]; then',
        '  me="$(hostname):$$"; waited=0',
        '  until mkdir "$lock" 2>/dev/null; do',
        '    holder=$(cat "$lock/owner" 2>/dev/null || echo "")',
        '    case "$holder" in',
        '      "$(hostname)":*) kill -0 "${holder##*:}" 2>/dev/null || { rm -rf "$lock"; continue; } ;;',
        "    esac",
        "    waited=$((waited + 1))",
        '    [ "$waited" -gt 3600 ] && {',
        '      echo "clustrix-env: gave up waiting for $lock (held by $holder)" >&2',
        f"      exit {BUILD_FAILED_EXIT}",
        "    }",
        "    sleep 1",
        "  done",
        '  echo "$me" > "$lock/owner"',
        "  trap 'rm -rf \"$lock\"' EXIT",
        f'  if [ ! -f "$env_dir/{READY_MARKER}" ]; then',
        '    rm -rf "$env_dir"',
        '    printf "%s\\n" ' + " ".join(q(r) for r in requirement_lines) + ' > "$env_dir.requirements.txt"'
        if requirement_lines
        else '    : > "$env_dir.requirements.txt"',
        "    if command -v uv >/dev/null 2>&1; then",
        # uv reads uv.toml / pyproject.toml from the directory it runs in and every parent: only the user's own
        '      uv_config="${XDG_CONFIG_HOME:-$HOME/.config}/uv/uv.toml"',
        '      if [ -f "$uv_config" ]; then export UV_CONFIG_FILE="$uv_config"; else export UV_NO_CONFIG=1; fi',
        f'      {{ uv venv --quiet {uv_venv}--python {py} "$env_dir" &&',
        f'        uv pip install --quiet {uv_options}--no-deps --python "$env_dir/bin/python"'
        ' -r "$env_dir.requirements.txt"; } >"$log" 2>&1',
        "    else",
        f'      {{ {py} -I -m venv "$env_dir" &&',
        f'        "$env_dir/bin/python" -I -m pip install --quiet {pip_options}--no-deps --disable-pip-version-check'
        ' --no-input -r "$env_dir.requirements.txt"; } >"$log" 2>&1',
        "    fi",
        "    status=$?",
        '    if [ "$status" -ne 0 ]; then',
        '      echo "clustrix-env: build-failed $env_dir" >&2; tail -n 40 "$log" >&2',
        f"      exit {BUILD_FAILED_EXIT}",
        "    fi",
        f'    date > "$env_dir/{READY_MARKER}"',
        '    echo "clustrix-env: built $env_dir"',
        "  fi",
        '  rm -rf "$lock"; trap - EXIT',
        "fi",
    ]
    for wheel, target in overlays:
        lines += [
            f"if [ ! -f {q(posixpath.join(target, READY_MARKER))} ]; then",
            f"  tmp={q(target)}.tmp.$$",
            f'  rm -rf "$tmp" && "$env_dir/bin/python" -I -m zipfile -e {q(wheel)} "$tmp" &&'
            f' date > "$tmp/{READY_MARKER}" && {{ [ -e {q(target)} ] || mv "$tmp" {q(target)}; rm -rf "$tmp"; }}',
            f"  [ -f {q(posixpath.join(target, READY_MARKER))} ] || {{",
            f"    printf 'clustrix-env: cannot unpack %s\\n' {q(wheel)} >&2; exit {BUILD_FAILED_EXIT}",
            "  }",
            "fi",
        ]
    lines.append('echo "clustrix-env: ready $env_dir/bin/python"')
    return "\n".join(lines) + "\n"


def venv_python(work_dir: str, key: str) -> str:
    """The python of the replicated venv ``key`` under ``work_dir`` (what the build script reports ready)."""
    return posixpath.join(work_dir, "envs", key, "bin", "python")


def overlay_dir(work_dir: str, dist: Mapping[str, Any]) -> str:
    """Where a local distribution's wheel is unpacked on the remote side (its label: name and source digest)."""
    return posixpath.join(work_dir, "local", f"{dist['name']}-{dist.get('digest', 'missing')}")


def render_probe(python: str, probe: str, index_url: str, wheelhouse: str, env_dir: str) -> list[str]:
    """Shell lines that, when the venv must be built, probe the target and, without an index, list the wheelhouse."""
    q = shlex.quote
    check = "1" if probe == "check" else "0"
    return [
        f"if [ ! -f {q(posixpath.join(env_dir, READY_MARKER))} ]; then",
        f"  cx_index=0; CX_INDEX_URL={q(index_url)} {python} -I -c {q(PROBE)} {check} || cx_index=$?",
        '  case "$cx_index" in',
        "    0) ;;",
        "    3) need=1; echo 'clustrix-env: index unreachable'",
        f"       for cx_w in {q(wheelhouse)}/*/*.whl; do",
        '         [ -f "$cx_w" ] && echo "clustrix-env: have $cx_w"',
        "       done ;;",
        f"    *) echo 'clustrix-env: the probe of {python} failed' >&2; exit {BUILD_FAILED_EXIT} ;;",
        "  esac",
        "fi",
    ]


def render_receive_checked(path: str, sha256: str, size: int) -> str:
    """A shell line storing the next ``size`` bytes of stdin as ``path`` if their sha256 is ``sha256``."""
    q = shlex.quote
    tmp = f"{q(path)}.tmp.$$"
    return (
        f"head -c {int(size)} > {tmp} && "
        f'[ "$( (sha256sum || shasum -a 256) < {tmp} 2>/dev/null | cut -c1-64)" = {q(sha256)} ] && '
        f"mv -f -- {tmp} {q(path)} || {{ rm -f {tmp}; "
        f"printf 'clustrix-env: wheel %s arrived damaged\\n' {q(posixpath.basename(path))} >&2; "
        f"exit {BUILD_FAILED_EXIT}; }}"
    )
