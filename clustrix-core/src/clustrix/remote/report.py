"""Job directories read in one remote command: the shell that prints outcome frames, and their parser.

Used by every backend that runs :mod:`clustrix.remote.runner` on another machine (the batch
engine, and so every dialect on it, the ``ssh`` backend included): instead of one SFTP
request per file, a script prints a job's outcome files inline in its output, after
checking that nobody but the login user could have written them. Pure: values in, shell
text or parsed bytes out, except :func:`run_script_bytes`, which runs one such script.

An outcome frame::

    ID outcomes N TOTAL ENCODING     ENCODING is base64 or raw
    SIZE INDEX                       N lines, in the order the files follow
    ID data
    <the concatenated outcome files: base64 lines, or TOTAL raw bytes and a newline>
    ID end

or the line ``ID outcomes-deferred TOTAL`` (too large to inline: fetched by one more
command) or ``ID unsafe REASON ENTRY`` (a job file could have been written by another user).
"""

from __future__ import annotations

import base64
import binascii
import posixpath
import shlex
from typing import TYPE_CHECKING

import attrs

from clustrix.errors import ReportError, UnsafePathError
from clustrix.remote import scripts as remote_script

if TYPE_CHECKING:
    from clustrix.plugin.transport import Transport
    from clustrix.plugin.types import JobHandle

#: ``find`` tests true for a directory that is not private: not owned by ``$uid``, group or
#: other writable, or not a directory at all (a symlink given as a start is not followed).
NOT_PRIVATE_DIR = '\\( ! -user "$uid" -o -perm -020 -o -perm -002 -o ! -type d \\)'

#: Outcomes of a finished job up to this many bytes in total ride inline (base64) in a
#: report's output, so fetching them costs no further round trip.
INLINE_LIMIT = 1024 * 1024

#: Shell functions for reports (POSIX sh), after :data:`clustrix.remote.scripts.CHECK_FUNCTIONS`.
#:
#: ``private DIR`` is the remote half of "nothing is unpickled from a place another user
#: can write": the job dir, its parent, its ``out/`` and every outcome file must be owned by
#: the login user, not group/other-writable, and of their expected type (``find`` does not
#: follow a symlink given as a starting point, so a symlink fails ``-type``). Any output of
#: ``find``, including its own errors, means "refuse"; ``why_unsafe DIR`` then names the
#: first entry that fails and why (``REASON ENTRY``, ENTRY relative to DIR: ``.``, ``out``,
#: ``..``, ``out/N.pkl``; REASON a key of :data:`clustrix.remote.scripts.REASONS`).
#:
#: ``outcomes ID DIR MODE`` prints one frame (see the module docs). ``MODE`` is ``raw``,
#: ``base64``, or ``auto`` (base64 if TOTAL <= :data:`INLINE_LIMIT` and ``base64`` exists,
#: else the line ``ID outcomes-deferred TOTAL``). A job failing ``private`` gets
#: ``ID unsafe REASON ENTRY``.
FRAME_FUNCTIONS = [
    remote_script.CHECK_FUNCTIONS,
    "uid=$(id -u)",
    # each outcome file's "SIZE INDEX" from wc's "SIZE N.pkl" lines, without wc's total line
    """sizes_awk='NR <= n {p = $2; sub(/\\.pkl$/, "", p); print $1, p}'""",
    "unsafe_entries() {",
    f'  find "$1" "$1/out" "$1/.." -prune {NOT_PRIVATE_DIR} -print 2>&1',
    '  find "$1/out" -name \'*.pkl\' \\( ! -user "$uid" -o -perm -020 -o -perm -002 -o ! -type f \\) -print 2>&1',
    "}",
    "why_unsafe() {",
    '  for e in . out ..; do w=$(cx_problem "$1/$e" d); [ -z "$w" ] || { echo "$w $e"; return; }; done',
    '  for f in "$1"/out/*.pkl; do',
    '    [ -e "$f" ] || [ -L "$f" ] || continue',
    '    w=$(cx_problem "$f" f); [ -z "$w" ] || { echo "$w out/${f##*/}"; return; }',
    "  done",
    '  echo "unchecked ."',
    "}",
    'private() { [ -z "$(unsafe_entries "$1")" ]; }',
    "outcomes() {",
    "  id=$1; dir=$2; mode=$3",
    '  if ! private "$dir"; then echo "$id unsafe $(why_unsafe "$dir")"; return; fi',
    # in a subshell inside out/: wc and cat see the names N.pkl only, so a work dir whose
    # path holds a newline (which wc would quote) cannot garble the report
    "  (",
    '  if cd -- "$dir/out" 2>/dev/null; then set -- *.pkl; else set -- ""; fi',
    '  if [ ! -e "$1" ]; then',
    '    printf \'%s outcomes 0 0 base64\\n%s data\\n%s end\\n\' "$id" "$id" "$id"; exit 0',
    "  fi",
    '  sizes=$(wc -c -- "$@" | awk -v n=$# "$sizes_awk")',
    "  total=$(printf '%s\\n' \"$sizes\" | awk '{t += $1} END {print t + 0}')",
    '  if [ "$mode" = auto ]; then',
    f'    if [ "$total" -le {INLINE_LIMIT} ] && command -v base64 >/dev/null 2>&1; then mode=base64; else',
    '      echo "$id outcomes-deferred $total"; exit 0',
    "    fi",
    "  fi",
    '  printf \'%s outcomes %s %s %s\\n%s\\n%s data\\n\' "$id" $# "$total" "$mode" "$sizes" "$id"',
    '  if [ "$mode" = raw ]; then cat -- "$@"; echo; else cat -- "$@" | base64; fi',
    '  echo "$id end"',
    "  )",
    "}",
]


def read_line(data: bytes, pos: int, job_id: str) -> tuple[str, int]:
    """The line starting at ``pos`` and the position after it; a missing newline is a cut-short frame."""
    newline = data.find(b"\n", pos)
    if newline < 0:
        raise ReportError(f"the outcome frame of job {job_id} is cut short")
    return data[pos:newline].decode(errors="replace"), newline + 1


def read_frame(
    data: bytes, pos: int, job_id: str, count: int, total: int, encoding: str
) -> tuple[dict[int, bytes], int]:
    """Read the frame whose header line (``ID outcomes COUNT TOTAL ENCODING``) ended at ``pos``.

    Returns call index -> outcome file bytes, and the position after the frame's end line.
    """
    sizes: list[tuple[int, int]] = []
    for _ in range(count):
        line, pos = read_line(data, pos, job_id)
        size_text, index_text = line.split()
        sizes.append((int(index_text), int(size_text)))
    line, pos = read_line(data, pos, job_id)
    if line != f"{job_id} data":
        raise ReportError(f"the outcome frame of job {job_id} has no data line (found {line[:80]!r})")
    if encoding == "raw":
        blob = data[pos : pos + total]
        pos += total
        _, pos = read_line(data, pos, job_id)  # the newline after the raw bytes
        line, pos = read_line(data, pos, job_id)
    else:
        end_marker = f"\n{job_id} end\n".encode()
        end = data.find(end_marker, pos - 1)
        if end < 0:
            raise ReportError(f"the outcome frame of job {job_id} has no end line")
        try:
            blob = base64.b64decode(b"".join(data[pos:end].split()), validate=True)
        except binascii.Error as exc:
            raise ReportError(f"the outcomes of job {job_id} are not valid base64: {exc}") from exc
        pos = end + 1
        line, pos = read_line(data, pos, job_id)
    if line != f"{job_id} end" or len(blob) != total or sum(size for _, size in sizes) != total:
        raise ReportError(f"the outcome frame of job {job_id} is inconsistent ({len(blob)} of {total} bytes)")
    files: dict[int, bytes] = {}
    offset = 0
    for index, size in sizes:
        files[index] = blob[offset : offset + size]
        offset += size
    return files, pos


@attrs.define
class Frames:
    """What a report's outcome lines said, by job id: inlined outcome files, deferred ones, unsafe ones."""

    outcomes: dict[str, dict[int, bytes]] = attrs.field(factory=dict)
    deferred: set[str] = attrs.field(factory=set)
    #: job id -> (reason word, entry relative to the job dir) of a job whose files may not be trusted
    unsafe: dict[str, tuple[str, str]] = attrs.field(factory=dict)

    def read(self, data: bytes, pos: int, words: list[str]) -> int | None:
        """Take the line ``words`` (ending at ``pos``) if it is an outcome line; the position after it, or None."""
        job_id, word = words[0], words[1]
        if word == "unsafe":
            self.unsafe[job_id] = (words[2], words[3]) if len(words) >= 4 else ("unchecked", ".")
        elif word == "outcomes-deferred":
            self.deferred.add(job_id)
        elif word == "outcomes" and len(words) == 5:
            self.outcomes[job_id], pos = read_frame(data, pos, job_id, int(words[2]), int(words[3]), words[4])
        else:
            return None
        return pos


def run_script_bytes(
    transport: Transport, script: str, data: bytes = b"", *, timeout: float | None = None
) -> tuple[int, bytes, bytes]:
    """Run a rendered ``sh`` script as one remote command: exit code, stdout and stderr as bytes.

    The script and then ``data`` travel on stdin behind the constant
    :data:`clustrix.remote.scripts.BOOTSTRAP` line, never in a process's arguments. A
    transport's ``run_bytes`` returns the output as it was printed, so outcome frames may be raw.
    """
    stdin = remote_script.script_input(script, data)
    return transport.run_bytes(shlex.join(remote_script.BOOTSTRAP_ARGV), input=stdin, timeout=timeout)


def unsafe_outcomes(handle: JobHandle, why: tuple[str, str]) -> UnsafePathError:
    """The error for a job whose file ``why[1]`` (relative to its job dir) failed the check ``why[0]``."""
    word, entry = why
    path = posixpath.normpath(posixpath.join(handle.job_dir or ".", entry))
    return remote_script.unsafe_error(path, word, handle.host or "the remote host")
