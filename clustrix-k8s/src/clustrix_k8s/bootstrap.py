"""The program a clustrix pod runs (standard library only; shipped in the payload Secret).

It is the pod side of the results channel documented in ``docs/kubernetes.md``:

1. join the payload chunks mounted from the job's Secrets (``payload`` keys, in order of
   the mount directories ``0, 1, ...``) and check their SHA-256 against ``meta.json``;
2. unpack the user's local code that leads the joined bytes (a ``tar.gz`` of
   ``<name>-<hash>/`` unit folders, see :mod:`clustrix.remote.localcode`) into the private job
   directory, put each unit folder first on ``sys.path`` (and ``PYTHONPATH``, for
   subprocesses) and import the modules the calls name, so a unit that does not import
   in this image fails with its import error and the fix, before any call runs;
3. write the calls to the job directory and run this task's calls with the clustrix
   runner shipped next to this file (``clustrix_runner.py``);
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
import urllib.request
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


def _api_request(method: str, path: str, body: dict[str, Any]) -> int:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:
        host = f"[{host}]"
    with open(os.path.join(ACCOUNT_DIR, "token"), encoding="utf-8") as fh:
        token = fh.read().strip()
    context = ssl.create_default_context(cafile=os.path.join(ACCOUNT_DIR, "ca.crt"))
    request = urllib.request.Request(
        f"https://{host}:{port}{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=60) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        if exc.code in (401, 403):
            raise RefusedError(
                f"clustrix bootstrap: the pod's ServiceAccount may not create ConfigMaps in its namespace "
                f"({exc.code}): {detail}; grant it the clustrix-runner Role (docs/kubernetes.md)"
            ) from None
        if exc.code == 409:
            return 409
        if exc.code < 500 and exc.code != 429:
            raise SystemExit(f"clustrix bootstrap: sending results failed ({exc.code}): {detail}") from None
        raise OSError(f"HTTP {exc.code}: {detail}") from None


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
        started = time.monotonic()
        delay = 0.2
        while True:
            try:
                _api_request("POST", f"/api/v1/namespaces/{namespace}/configmaps", body)
                break
            except RefusedError as exc:
                if time.monotonic() - started > REFUSED_PATIENCE:
                    raise SystemExit(str(exc)) from None
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            except OSError as exc:
                if time.monotonic() - started > UPLOAD_PATIENCE:
                    raise SystemExit(
                        f"clustrix bootstrap: could not send results for {UPLOAD_PATIENCE:.0f} s: {exc}"
                    ) from exc
                print(f"clustrix bootstrap: sending results failed ({exc}); retrying", file=sys.stderr, flush=True)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)


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
