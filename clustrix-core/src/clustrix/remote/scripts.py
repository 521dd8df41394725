"""Running clustrix's own shell scripts remotely: over stdin, behind private-directory checks.

Two rules of the trust model (see the Security page of the docs) live here:

* **No script in a process's arguments.** Any user of a host can read every process's
  arguments (``/proc/PID/cmdline``, ``ps``), and scripts carry environment values and the
  user's pre-execution commands. The remote command is always the constant
  :data:`BOOTSTRAP`, which reads the script's length and text from stdin and evaluates it;
  data the script stores (a payload, a wheel) follows the script on stdin.
* **Check before write.** Nothing is written into, or run from, a directory another user
  could change. :data:`CHECK_FUNCTIONS` verify, in the same remote command that then
  writes, that the work directory and every directory clustrix uses below it is a real
  directory (``lstat``: not a symbolic link), owned by the login user and writable by
  nobody else, and that every directory on the way to the work directory belongs to root
  or the user and is writable by others only if sticky (like ``/tmp``). Directories
  clustrix creates are created ``0700`` at once, one level at a time (``mkdir -m 700``;
  a level that appears meanwhile is refused as a race unless it is the user's own and
  private, as another of their submits makes it), and the whole chain is checked again
  once the work directory exists; directories it did not create are never
  ``chmod``-ed: an unsafe one is refused with the fix.
* **Nothing runs in the caller's directory.** ``cx_work_dir`` ends in the checked work
  directory (``cd``), so what a script runs next never starts in a folder another user can
  write (the login node's current directory, whose files Python, uv and pip would pick up).

The rendering is pure; :func:`run_script` (and :func:`run_checked` over it) is the one I/O edge.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from clustrix.errors import UnsafePathError

if TYPE_CHECKING:
    from clustrix.plugin.transport import CommandResult, Transport

#: The whole remote command line: the script comes on stdin (its byte length on the first line).
#: ``head -c`` reads exactly that many bytes, so data after the script stays on stdin for it.
BOOTSTRAP = 'IFS= read -r n && s=$(head -c "$n") && eval "$s"'
BOOTSTRAP_ARGV = ("sh", "-c", BOOTSTRAP)

#: The first statement of every ``python -c`` clustrix runs where ``-I`` cannot be used (the code
#: must import from the job's own ``PYTHONPATH``): ``-c`` puts the current directory first on
#: ``sys.path``, and Python 3.10 has no ``-P``. ``sys`` is built in, so nothing is imported before it.
SAFE_SYS_PATH = 'import sys; sys.path[:] = [p for p in sys.path if p not in ("", ".")]'

#: Exit status of a script that refused a directory (after a :data:`UNSAFE_TAG` report on stderr).
UNSAFE_EXIT = 44
UNSAFE_TAG = "clustrix-unsafe:"
UNSAFE_END = "clustrix-unsafe-end"

#: Why a directory (or file) is refused, by the word the check functions print.
REASONS = {
    "symlink": "is a symbolic link",
    "not-directory": "is not a directory",
    "not-file": "is not a regular file",
    "missing": "does not exist",
    "foreign-owner": "belongs to another user",
    "writable": "is writable by other users",
    "unsafe-ancestor": (
        "is on the way to the work directory, and another user could replace what is below it "
        "(it belongs neither to root nor to you, or others may write it and it is not sticky)"
    ),
    "cannot-enter": "cannot be entered",
    "raced": (
        "appeared while clustrix was creating it: another user may have made it first, to swap what clustrix "
        "writes below it"
    ),
    "unchecked": "could not be checked",
}

#: The fix for each reason, for directories the user handed over (``remote_work_dir``) or
#: that exist below it from before.
FIXES = {
    "symlink": (
        "clustrix follows no link there, since another user may have planted it: remove the link and submit "
        "again, or set remote_work_dir to a real directory"
    ),
    "not-directory": "remove it, or set remote_work_dir elsewhere",
    "foreign-owner": (
        "use a remote_work_dir of your own (the default ~/.clustrix is); if it is inside your work directory, "
        "another user planted it there: remove it"
    ),
    "writable": (
        "clustrix never changes the permissions of a directory it did not create: check that nothing in it was "
        "planted by another user, then make it private yourself (chmod 700 it), or set remote_work_dir to a "
        "private directory such as ~/.clustrix"
    ),
    "unsafe-ancestor": "set remote_work_dir to a directory under your home, such as ~/.clustrix",
    "cannot-enter": "check the path and its permissions",
    "raced": (
        "check who made it (ls -ld) and remove it if it is not yours, then submit again; or set remote_work_dir to "
        "a directory under your home, such as ~/.clustrix"
    ),
}

#: POSIX sh functions of the checks (every name starts with ``cx_``). ``cx_unsafe PATH WHY``
#: reports and exits :data:`UNSAFE_EXIT`.
CHECK_FUNCTIONS = r"""umask 077
cx_uid=$(id -u)
cx_unsafe() {
  printf '%s %s\n%s\n%s\n' 'clustrix-unsafe:' "$2" "$1" 'clustrix-unsafe-end' >&2
  exit 44
}
cx_problem() {
  if [ -L "$1" ]; then echo symlink
  elif [ ! -e "$1" ]; then echo missing
  elif [ "${2:-d}" = d ] && [ ! -d "$1" ]; then echo not-directory
  elif [ "${2:-d}" = f ] && [ ! -f "$1" ]; then echo not-file
  elif [ -n "$(find "$1" -prune ! -user "$cx_uid" -print 2>&1)" ]; then echo foreign-owner
  elif [ -n "$(find "$1" -prune \( -perm -020 -o -perm -002 \) -print 2>&1)" ]; then echo writable
  fi
}
cx_private() {
  [ -z "$(find "$@" -prune \( ! -type d -o ! -user "$cx_uid" -o -perm -020 -o -perm -002 \) -print 2>&1)" ] \
    && return 0
  for cx_d in "$@"; do
    cx_w=$(cx_problem "$cx_d"); [ -z "$cx_w" ] || cx_unsafe "$cx_d" "$cx_w"
  done
  cx_unsafe "$1" unchecked
}
cx_mkdir() {
  for cx_d in "$@"; do
    [ -e "$cx_d" ] || [ -L "$cx_d" ] || mkdir -m 700 -- "$cx_d" 2>/dev/null || [ -d "$cx_d" ] || {
      echo "clustrix: cannot create directory $cx_d" >&2; exit 1; }
  done
  cx_private "$@"
}
cx_existing() {
  for cx_x in "$@"; do if [ -e "$cx_x" ] || [ -L "$cx_x" ]; then cx_private "$cx_x"; fi; done
}
cx_bad_ancestor() {
  find "$@" -prune \( \( ! -user 0 ! -user "$cx_uid" \) \
    -o \( ! -type l \( -perm -020 -o -perm -002 \) ! -perm -1000 \) \) -print 2>&1
}
cx_ancestors() {
  cx_phys=$(cd -P -- "$1" 2>/dev/null && pwd -P) || cx_unsafe "$1" cannot-enter
  cx_given=$1
  set -- /
  for cx_path in "$cx_given" "$cx_phys"; do
    cx_rest=${cx_path#/}; cx_at=""
    while [ -n "$cx_rest" ]; do
      cx_c=${cx_rest%%/*}
      case $cx_rest in */*) cx_rest=${cx_rest#*/} ;; *) cx_rest="" ;; esac
      case $cx_c in ""|.) continue ;; esac
      cx_at="$cx_at/$cx_c"; set -- "$@" "$cx_at"
    done
  done
  [ -z "$(cx_bad_ancestor "$@")" ] && return 0
  for cx_a in "$@"; do [ -z "$(cx_bad_ancestor "$cx_a")" ] || cx_unsafe "$cx_a" unsafe-ancestor; done
  cx_unsafe "$cx_given" unchecked
}
cx_work_dir() {
  cx_wd=$1
  cx_e=$cx_wd
  while [ ! -e "$cx_e" ] && [ ! -L "$cx_e" ]; do cx_e=$(dirname -- "$cx_e"); done
  if [ "$cx_e" != "$cx_wd" ]; then
    cx_ancestors "$cx_e"
    cx_rest=${cx_wd#"$cx_e"}; cx_at=${cx_e%/}
    while [ -n "$cx_rest" ]; do
      cx_rest=${cx_rest#/}; cx_c=${cx_rest%%/*}
      case $cx_rest in */*) cx_rest=${cx_rest#*/} ;; *) cx_rest="" ;; esac
      case $cx_c in ""|.) continue ;; esac
      cx_at="$cx_at/$cx_c"
      mkdir -m 700 -- "$cx_at" 2>/dev/null && continue
      if [ -e "$cx_at" ] || [ -L "$cx_at" ]; then
        # made between the check and mkdir: by another clustrix command of yours (private, yours), or not
        [ -z "$(cx_problem "$cx_at")" ] || cx_unsafe "$cx_at" raced
        continue
      fi
      echo "clustrix: cannot create directory $cx_at" >&2; exit 1
    done
  fi
  cx_private "$cx_wd"
  cx_ancestors "$cx_wd"
  cd -- "$cx_wd" || cx_unsafe "$cx_wd" cannot-enter
}
"""


def script_input(script: str, data: bytes = b"") -> bytes:
    """What :data:`BOOTSTRAP` reads on stdin: the script's byte length, the script, then ``data``."""
    encoded = script.encode()
    return f"{len(encoded)}\n".encode() + encoded + data


def run_script(transport: Transport, script: str, data: bytes = b"", *, timeout: float | None = None) -> CommandResult:
    """Run a clustrix script on ``transport``'s host with the script and ``data`` on stdin, never in argv."""
    return transport.run(list(BOOTSTRAP_ARGV), input=script_input(script, data), timeout=timeout)


def run_checked(
    transport: Transport,
    script: str,
    data: bytes = b"",
    *,
    timeout: float | None = None,
    failure: Callable[[CommandResult], Exception] | None = None,
) -> CommandResult:
    """:func:`run_script`, then raise the :class:`UnsafePathError` the script reported on stderr, if any.

    With ``failure``, a result that is not ok (and reported no unsafe directory) raises
    ``failure(result)``; without, the caller reads the result (an exit status it expects).
    """
    result = run_script(transport, script, data, timeout=timeout)
    unsafe = unsafe_from_stderr(result.stderr, transport.host)
    if unsafe is not None:
        raise unsafe
    if failure is not None and not result.ok:
        raise failure(result)
    return result


def render_work_dir_check(work_dir: str, subdirs: Sequence[str] = ()) -> list[str]:
    """Shell lines that create (``0700``) or refuse ``work_dir`` and change into it, then make ``subdirs``.

    ``work_dir`` must be absolute (expanded) and free of ``..``: a ``ValueError`` names the fix.
    """
    if not work_dir.startswith("/") or ".." in work_dir.split("/"):
        raise ValueError(
            f"remote_work_dir={work_dir!r} is not an absolute path: set it to an absolute path without '..', or one "
            "starting with ~/ (the default is ~/.clustrix)"
        )
    q = shlex.quote
    lines = [f"cx_work_dir {q(work_dir)}"]
    if subdirs:
        lines.append("cx_mkdir " + " ".join(q(d) for d in subdirs))
    return lines


def render_enter_work_dir(work_dir: str) -> list[str]:
    """Shell lines that change into ``work_dir`` after checking it if it exists, else into ``/``; creates nothing.

    For checks that run before anything is written: no Python starts in the caller's directory.
    """
    q = shlex.quote(work_dir)
    return [
        f"if [ -e {q} ] || [ -L {q} ]; then",
        *("  " + line for line in render_work_dir_check(work_dir)),
        "else cd / || exit 1",
        "fi",
    ]


def render_receive(path: str, size: int) -> str:
    """A shell line storing the next ``size`` bytes of stdin as ``path`` (private, replaced by rename)."""
    q = shlex.quote(path)
    return f"head -c {int(size)} > {q}.tmp.$$ && mv -f -- {q}.tmp.$$ {q}"


_UNSAFE = re.compile(re.escape(UNSAFE_TAG) + r" (\S+)\n(.*?)\n" + re.escape(UNSAFE_END), re.DOTALL)


def unsafe_from_stderr(stderr: str, host: str) -> UnsafePathError | None:
    """The :class:`UnsafePathError` a check reported on ``stderr`` (path, reason and fix), or None."""
    found = _UNSAFE.search(stderr)
    if found is None:
        return None
    word, path = found.groups()
    return unsafe_error(path, word, host)


def unsafe_error(path: str, word: str, host: str, detail: str = "") -> UnsafePathError:
    """The error for ``path`` refused for ``word`` (a key of :data:`REASONS`), with its fix."""
    reason = REASONS.get(word, word) + (f" ({detail})" if detail else "")
    fix = FIXES.get(word, "")
    return UnsafePathError(
        f"{path} on {host} {reason}: refusing to unpickle, write or run anything there (nothing was submitted or "
        f"read). {fix}".rstrip()
    )
