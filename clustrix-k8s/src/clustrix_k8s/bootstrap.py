"""The program a clustrix pod runs (standard library only; shipped in the payload Secret).

It is the pod side of the results channel documented in ``docs/kubernetes.md``:

1. join the payload chunks mounted from the job's Secrets (``payload`` keys, in order of
   the mount directories ``0, 1, ...``) and check their SHA-256 against ``meta.json``;
2. unpack the user's local code that leads the joined bytes (a ``tar.gz`` of
   ``<name>-<hash>/`` unit folders, see :mod:`clustrix.remote.localcode`) into the private job
   directory, put each unit folder first on ``sys.path`` (and ``PYTHONPATH``, for
   subprocesses) and import the modules the calls name, so a unit that does not import
   in this image fails with its import error and the fix, before any call runs;
3. write the calls to the job directory; when they take other jobs' results as arguments
   (``meta.json``'s ``after``, see :mod:`clustrix_k8s.inputs`), wait for those results and
   fetch them into private folders (:func:`fetch_inputs`); then run this task's calls with
   the clustrix runner shipped next to this file (``clustrix_runner.py``);
4. send every outcome back as ConfigMaps owned by the Job, created through the API server
   with the pod's ServiceAccount token: each call's outcome bytes are encrypted under the
   job's key from ``meta.json`` (a SHAKE-256 key stream from the key and a random nonce),
   signed with HMAC-SHA256 under it (so the submitter accepts only what this job wrote),
   cut into parts of at most :data:`PART_BYTES` and packed into ConfigMaps of at most
   :data:`SECRET_BYTES`; every ConfigMap of one attempt carries the attempt's name and
   the number it wrote, so an incomplete attempt is never read. Results are ConfigMaps,
   not Secrets, so the submitting user needs no read access to Secrets, where the key is;
5. exit with the runner's exit code (non-zero when a call raised), so the Job's
   ``backoffLimit`` retries failed calls.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import io
import json
import os
import signal
import ssl
import sys
import tarfile
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

MOUNT = "/var/run/clustrix/payload"
#: The pod's writable scratch (an ``emptyDir``, the container's ``TMPDIR``): the job directory lives there.
SCRATCH = "/var/run/clustrix/scratch"
ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: One call's outcome is cut into parts of this size at most.
PART_BYTES = 512 * 1024
#: The data of one result ConfigMap stays below this (the API limit is 1 MiB).
SECRET_BYTES = 700 * 1024
#: How long sending results may keep failing (API server restarting) before the pod gives up.
UPLOAD_PATIENCE = 600.0
#: how long a 401/403 is retried: an API server that has just (re)started refuses requests
#: until its authorization caches are filled (seen on the real-node testbed after a restart)
REFUSED_PATIENCE = 20.0
#: The longest pause between two looks at an upstream job's results (a dependant pod waiting for its inputs).
INPUT_POLL = 5.0
#: Where a dependant pod puts the outcomes its calls take as arguments, a folder per upstream job.
INPUTS = SCRATCH + "/inputs"


class RefusedError(Exception):
    """The API server refused the pod's ServiceAccount (401/403)."""


def read_payload(mount: str = MOUNT) -> tuple[dict[str, Any], bytes, str]:
    """``meta.json``, the joined payload bytes and the runner source from the mounted Secrets."""
    with open(os.path.join(mount, "0", "meta.json"), encoding="utf-8") as fh:
        meta = json.load(fh)
    parts = []
    for index in range(int(meta["chunks"])):
        with open(os.path.join(mount, str(index), "payload"), "rb") as fh:
            parts.append(fh.read())
    payload = b"".join(parts)
    if hashlib.sha256(payload).hexdigest() != meta["sha256"]:
        raise SystemExit("clustrix bootstrap: the payload read from the job's Secrets is corrupt (SHA-256 differs)")
    with open(os.path.join(mount, "0", "clustrix_runner.py"), encoding="utf-8") as fh:
        runner_source = fh.read()
    return meta, payload, runner_source


def install_code(data: bytes, code: dict[str, Any], job_dir: str) -> list[str]:
    """Unpack the local code units under ``job_dir/code`` and put them first on the import path.

    Returns the unit folders. The archive comes from the job's own Secrets (written by the
    submitter) and is unpacked with tarfile's ``data`` filter where this Python has it.
    """
    if not code.get("units"):
        return []
    target = os.path.join(job_dir, "code")
    os.mkdir(target, 0o700)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(target, filter="data")
        else:  # Python < 3.8.17 / 3.11.4: the archive is the job's own, written by its submitter
            tar.extractall(target)
    paths = [os.path.join(target, label) for label in code["units"]]
    sys.path[:0] = paths
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *([old] if old else [])])
    return paths


def import_code(modules: list[str]) -> str | None:
    """Import the local modules the calls name; the error text for the first that fails, else None."""
    for name in modules:
        try:
            __import__(name)
        except BaseException as exc:  # noqa: BLE001 - any import-time failure is reported the same way
            return (
                f"clustrix bootstrap: your local module {name!r} was shipped with the job but does not import "
                f"with this pod's Python ({sys.executable}): {type(exc).__name__}: {exc}\n"
                "Install what it needs in the image (or set replicate_environment=True to pip-install the "
                "distributions it imports at container start), or, if the image has its own copy of the module, "
                f"set exclude_modules=[{name.split('.')[0]!r}].\n{traceback.format_exc()[-3000:]}"
            )
    return None


def keystream_xor(data: bytes, key: bytes, nonce: bytes) -> bytes:
    """``data`` XOR a SHAKE-256 key stream of ``key`` and ``nonce``: encrypts and decrypts."""
    stream = hashlib.shake_256(b"clustrix-result\0" + key + nonce).digest(len(data))
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(len(data), "little")


def attempt_context(task: object, attempt: str, stamp: object) -> bytes:
    """What each signature of an attempt also covers: its task, name and time (a replay under a new stamp fails)."""
    return f"{task}\0{attempt}\0{stamp}\0".encode()


def outcome_mac(key: bytes, context: bytes, index: int, nonce: bytes, sealed: bytes) -> bytes:
    """The signature of call ``index``'s encrypted outcome (hex HMAC-SHA256 under the job's key)."""
    return hmac.new(key, context + f"{index}:".encode() + nonce + sealed, hashlib.sha256).hexdigest().encode()


def pack_outcomes(outcomes: dict[int, bytes], key: bytes, context: bytes) -> list[dict[str, bytes]]:
    """The data of each result ConfigMap: ``<index>.<part>.<parts>`` (encrypted), ``<index>.nonce``, ``<index>.mac``.

    ``context`` is the :func:`attempt_context` of the attempt that sends them.
    """
    entries: list[tuple[str, bytes]] = []
    for index in sorted(outcomes):
        nonce = os.urandom(16)
        data = keystream_xor(outcomes[index], key, nonce)
        pieces = [data[i : i + PART_BYTES] for i in range(0, len(data), PART_BYTES)] or [b""]
        for number, piece in enumerate(pieces):
            entries.append((f"{index}.{number}.{len(pieces)}", piece))
        entries.append((f"{index}.nonce", nonce))
        entries.append((f"{index}.mac", outcome_mac(key, context, index, nonce, data)))
    secrets: list[dict[str, bytes]] = []
    current: dict[str, bytes] = {}
    size = 0
    for name, value in entries:
        if current and size + len(value) > SECRET_BYTES:
            secrets.append(current)
            current, size = {}, 0
        current[name] = value
        size += len(value)
    if current:
        secrets.append(current)
    return secrets


# ---- reading results back (the submitter's fetch, and a dependant pod reading its inputs) -------------
# Per array task, the ConfigMaps are grouped by attempt (``clustrix.io/attempt``); an attempt counts
# only when all the ConfigMaps it announced (``clustrix.io/objects``) are present and every call's
# encrypted bytes in it carry a valid HMAC-SHA256 under the job's key. Of the attempts that count, the
# newest (``clustrix.io/stamp``) wins, so after ``backoffLimit`` retries the last attempt's outcome is
# the one returned, and an object someone else wrote (anyone who may create ConfigMaps in the
# namespace can, the pods' own ServiceAccount included) neither hides the real outcome nor is ever
# decrypted or unpickled.
def _annotation(item: Mapping[str, Any], name: str) -> str:
    return str(((item.get("metadata") or {}).get("annotations") or {}).get(name, ""))


def verified_outcomes(items: Iterable[Mapping[str, Any]], key: bytes, context: bytes) -> dict[int, bytes] | None:
    """Call index -> outcome bytes of one attempt's ConfigMaps; None unless every call in them is whole and signed.

    ``context`` is the attempt's :func:`clustrix_k8s.bootstrap.attempt_context`, as its objects announce it.
    """
    parts: dict[int, dict[int, bytes]] = {}
    counts: dict[int, int] = {}
    macs: dict[int, bytes] = {}
    nonces: dict[int, bytes] = {}
    try:
        for item in items:
            for name, value in (item.get("binaryData") or {}).items():
                fields = name.split(".")
                raw = base64.b64decode(value, validate=True)
                if len(fields) == 2 and fields[1] in ("mac", "nonce") and fields[0].isdigit():
                    (macs if fields[1] == "mac" else nonces)[int(fields[0])] = raw
                elif len(fields) == 3 and all(f.isdigit() for f in fields):
                    index, number, count = (int(f) for f in fields)
                    if counts.setdefault(index, count) != count:
                        return None
                    parts.setdefault(index, {})[number] = raw
                else:
                    return None
    except (ValueError, TypeError):
        return None
    if not parts or set(parts) != set(macs) or set(parts) != set(nonces):
        return None
    outcomes: dict[int, bytes] = {}
    for index, pieces in parts.items():
        if sorted(pieces) != list(range(counts[index])):
            return None
        sealed = b"".join(pieces[n] for n in range(counts[index]))
        if not hmac.compare_digest(outcome_mac(key, context, index, nonces[index], sealed), macs[index]):
            return None
        outcomes[index] = keystream_xor(sealed, key, nonces[index])
    return outcomes


def outcome_bytes(
    secrets: Iterable[Mapping[str, Any]], key: bytes, refused: list[str] | None = None
) -> dict[int, bytes]:
    """Call index -> outcome bytes, from the JSON items of a ConfigMap list: per task, the newest signed attempt.

    The names of newer attempts that were refused (incomplete, or a signature that does not
    verify) are appended to ``refused``.
    """
    attempts: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for item in secrets:
        labels = (item.get("metadata") or {}).get("labels") or {}
        attempts.setdefault(
            (str(labels.get("clustrix.io/task", "")), _annotation(item, "clustrix.io/attempt")), []
        ).append(item)
    best: dict[str, tuple[int, dict[int, bytes]]] = {}
    for (task, attempt), items in attempts.items():
        try:
            announced = {int(_annotation(item, "clustrix.io/objects")) for item in items}
            stamps = {int(_annotation(item, "clustrix.io/stamp")) for item in items}
        except ValueError:
            continue
        if announced != {len(items)} or len(stamps) != 1:
            continue
        (stamp,) = stamps
        if task in best and stamp <= best[task][0]:
            continue
        found = verified_outcomes(items, key, attempt_context(task, attempt, stamp))
        if found is not None:
            best[task] = (stamp, found)
        elif refused is not None:
            refused.append(attempt)
    outcomes: dict[int, bytes] = {}
    for _stamp, found in best.values():
        outcomes.update(found)
    return outcomes


def _api_request(method: str, path: str, body: dict[str, Any] | None = None, *, what: str) -> tuple[int, Any]:
    """One request as the pod's ServiceAccount: ``(status, reply)``, the reply parsed for a GET.

    ``what`` says in words what the request does, for the errors. 409 (it exists: a retry of a
    create) and, for a GET, 404 are answers; 401/403 raise :class:`RefusedError`, a 5xx or 429
    :class:`OSError` (both retried by :func:`_patiently`), any other client error ends the pod.
    """
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:
        host = f"[{host}]"
    with open(os.path.join(ACCOUNT_DIR, "token"), encoding="utf-8") as fh:
        token = fh.read().strip()
    context = ssl.create_default_context(cafile=os.path.join(ACCOUNT_DIR, "ca.crt"))
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(
        f"https://{host}:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=60) as response:
            raw = response.read()
            return int(response.status), json.loads(raw) if method == "GET" and raw else None
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        if exc.code in (401, 403):
            raise RefusedError(
                f"clustrix bootstrap: the pod's ServiceAccount may not {what} ({exc.code}): {detail}; "
                "grant it the clustrix-runner Role (docs/kubernetes.md)"
            ) from None
        if exc.code == 409 or (exc.code == 404 and method == "GET"):
            return exc.code, None
        if exc.code < 500 and exc.code != 429:
            raise SystemExit(f"clustrix bootstrap: {what} failed ({exc.code}): {detail}") from None
        raise OSError(f"HTTP {exc.code}: {detail}") from None


def _patiently(method: str, path: str, body: dict[str, Any] | None = None, *, what: str) -> tuple[int, Any]:
    """:func:`_api_request`, retried while the API server is unreachable or (just restarted) refuses the pod."""
    started = time.monotonic()
    delay = 0.2
    while True:
        try:
            return _api_request(method, path, body, what=what)
        except RefusedError as exc:
            if time.monotonic() - started > REFUSED_PATIENCE:
                raise SystemExit(str(exc)) from None
        except OSError as exc:
            if time.monotonic() - started > UPLOAD_PATIENCE:
                raise SystemExit(f"clustrix bootstrap: could not {what} for {UPLOAD_PATIENCE:.0f} s: {exc}") from exc
            print(f"clustrix bootstrap: could not {what} ({exc}); retrying", file=sys.stderr, flush=True)
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def upload(outcomes: dict[int, bytes], meta: dict[str, Any], task: int) -> None:
    """Create the result ConfigMaps of this attempt (retrying while the API server is unreachable)."""
    env = os.environ
    namespace = env["CLUSTRIX_NAMESPACE"]
    pod = env["CLUSTRIX_POD_NAME"]
    attempt = hashlib.sha256(pod.encode()).hexdigest()[:10]
    stamp = str(time.time_ns())
    packed = pack_outcomes(outcomes, bytes.fromhex(meta["key"]), attempt_context(task, pod, stamp))
    owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": env["CLUSTRIX_JOB_NAME"],
        "uid": env["CLUSTRIX_JOB_UID"],
    }
    for seq, data in enumerate(packed):
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"{meta['prefix']}-r{task}-{attempt}-{seq}",
                "namespace": namespace,
                "labels": {**meta["labels"], "clustrix.io/kind": "result", "clustrix.io/task": str(task)},
                "annotations": {
                    "clustrix.io/attempt": pod,
                    "clustrix.io/stamp": stamp,
                    "clustrix.io/objects": str(len(packed)),
                },
                "ownerReferences": [owner] if owner["uid"] else [],
            },
            "binaryData": {name: base64.b64encode(value).decode() for name, value in data.items()},
        }
        _patiently("POST", f"/api/v1/namespaces/{namespace}/configmaps", body, what="create ConfigMaps (its results)")


# ---- inputs: a dependant pod fetches the results its calls take as arguments -------------------------
def _listed(namespace: str, group: str, resource: str, job: str, kind: str) -> list[dict[str, Any]]:
    selector = urllib.parse.quote(f"clustrix.io/job-id={job},clustrix.io/kind={kind}")
    path = f"/{group}/namespaces/{namespace}/{resource}?labelSelector={selector}"
    of = "Kubernetes Jobs" if kind == "job" else "results"
    _status, reply = _patiently("GET", path, what=f"list {resource} (the {of} of input job {job})")
    return list((reply or {}).get("items") or [])


def final_condition(job: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The Job's ``Complete`` or ``Failed`` condition that is true, if any."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return condition  # type: ignore[no-any-return]
    return None


def upstream_over(jobs: list[dict[str, Any]]) -> bool:
    """Whether an upstream job can send no more results: its Jobs are gone, or each has ended."""
    return all(final_condition(job) is not None for job in jobs)


def needed_inputs(meta: dict[str, Any], task: int) -> list[tuple[dict[str, Any], set[int]]]:
    """Each upstream job of ``meta["after"]`` with the calls of it this task's calls take as arguments."""
    wanted = []
    for entry in meta.get("after") or []:
        needs = entry["needs"]
        calls = set(needs[task]) if task < len(needs) else set()
        if calls:
            wanted.append((entry, calls))
    return wanted


def fetch_inputs(meta: dict[str, Any], task: int, outcome_name: Any, write: Any) -> None:
    """Put each upstream outcome this task needs into its input folder (``entry["dir"]``), as the runner reads it.

    It waits, looking again after 0.5 s, then less often (up to :data:`INPUT_POLL`), until every
    outcome is there or its upstream is over (its Jobs ended, or were deleted, or its deadline passed):
    the runner then fails the calls whose input is missing with a DependencyError naming it. The Jobs
    are looked at before the results, so an outcome sent before its Job ended is never missed.
    """
    namespace = os.environ["CLUSTRIX_NAMESPACE"]
    waiting = needed_inputs(meta, task)
    for entry, _calls in waiting:
        os.makedirs(os.path.join(entry["dir"], os.path.dirname(outcome_name(0))), mode=0o700, exist_ok=True)
        os.chmod(entry["dir"], 0o700)
    delay = 0.5
    while waiting:
        still = []
        for entry, calls in waiting:
            over = upstream_over(_listed(namespace, "apis/batch/v1", "jobs", entry["job"], "job"))
            items = _listed(namespace, "api/v1", "configmaps", entry["job"], "result")
            found = outcome_bytes(items, bytes.fromhex(entry["key"]))
            for index in calls & found.keys():
                write(os.path.join(entry["dir"], outcome_name(index)), found[index])
            calls = calls - found.keys()
            if calls and not over:
                still.append((entry, calls))
        waiting = still
        if waiting:
            time.sleep(delay)
            delay = min(delay * 1.5, INPUT_POLL)


def task_number() -> int:
    for name in ("CLUSTRIX_TASK_ID", "JOB_COMPLETION_INDEX"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def _end_by_signal(signum: int, _frame: object) -> None:
    os._exit(128 + signum)


def main() -> int:
    # The container's first process gets no default signal actions: without this, the SIGTERM of a
    # cancel or a drain is ignored and the pod holds its node for the whole grace period.
    if os.getpid() == 1:
        signal.signal(signal.SIGTERM, _end_by_signal)
    meta, payload, runner_source = read_payload(os.environ.get("CLUSTRIX_PAYLOAD_MOUNT", MOUNT))
    task = task_number()
    job_dir = tempfile.mkdtemp(prefix="clustrix-")
    os.makedirs(os.path.join(job_dir, "out"), mode=0o700)
    code = meta.get("code") or {}
    size = int(code.get("size") or 0)
    install_code(payload[:size], code, job_dir)
    payload = payload[size:]
    failure = import_code(list(code.get("modules") or []))
    if failure is not None:
        print(failure, file=sys.stderr)
        return 2
    fd = os.open(os.path.join(job_dir, "payload.pkl"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(payload)
    del payload
    runner_path = os.path.join(job_dir, "clustrix_runner.py")
    with open(runner_path, "w", encoding="utf-8") as fh:
        fh.write(runner_source)
    spec = importlib.util.spec_from_file_location("clustrix_runner", runner_path)
    assert spec is not None and spec.loader is not None
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    fetch_inputs(meta, task, runner.outcome_name, runner.write_atomic)
    try:
        code = int(runner.run_task(job_dir, task))
    except SystemExit:
        raise
    except BaseException:  # noqa: BLE001 - e.g. the payload needs a module this image lacks
        traceback.print_exc()
        print("clustrix bootstrap: the runner failed before running the calls (see above)", file=sys.stderr)
        return 2
    outcomes: dict[int, bytes] = {}
    out_dir = os.path.join(job_dir, "out")
    for name in os.listdir(out_dir):
        stem, _, suffix = name.partition(".")
        if suffix == "pkl" and stem.isdigit():
            with open(os.path.join(out_dir, name), "rb") as fh:
                outcomes[int(stem)] = fh.read()
    upload(outcomes, meta, task)
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
