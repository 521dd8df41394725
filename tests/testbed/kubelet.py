"""The project's own local kubelet: one Node whose pods run as local processes.

No container runtime exists here, so this kubelet stands in for the node agent while
the API server, etcd and the controllers are the real ones. It

- registers the Ready Node ``local-node`` (InternalIP 127.0.0.1, its log port as the
  kubelet endpoint, CPU and memory of this machine, ``nvidia.com/gpu`` as configured)
  and renews its status every 10 s;
- schedules: binds every unscheduled pod whose ``nodeSelector``, tolerations and
  resource requests fit the Node (``pods/binding``), else marks it
  ``PodScheduled=False/Unschedulable`` with the scheduler's kind of message;
- "pulls" images: an image matching ``--pullable`` counts as present, any other ends
  in ``ErrImagePull``/``ImagePullBackOff`` with a Warning event, as a missing image does;
- runs each container's ``command`` + ``args`` (with ``$(VAR)`` expansion) as a local
  process, its environment built from ``value``, ``secretKeyRef``, ``configMapKeyRef``
  and ``fieldRef`` entries, its secret, configMap, emptyDir and hostPath volumes written to a
  private directory and bind-mounted at their ``mountPath`` in a private mount
  namespace (``unshare -m``); a container waits in ``CreateContainerConfigError`` while
  a referenced Secret or ConfigMap is missing;
- enforces ``resources.limits.memory`` with a memory cgroup (v1 or v2) and reports ``OOMKilled``
  (exit code 137) when the kernel's OOM killer ended the container;
- reports Running, then Succeeded/Failed with each container's exit code and reason;
- on deletion sends SIGTERM to the process group, SIGKILL after the grace period, then
  removes the pod; ``activeDeadlineSeconds`` kills it and fails it with ``DeadlineExceeded``;
- serves ``GET /containerLogs/{ns}/{pod}/{container}`` over TLS, so
  ``read_namespaced_pod_log`` goes through the real API server's proxy.

Only ``restartPolicy: Never`` pods are run as a real kubelet would (a failed
container is not restarted in place); images are not isolated: the host's
interpreters run the commands.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import http.server
import os
import re
import shlex
import signal
import socket
import ssl
import subprocess
import threading
import time
import traceback
import urllib.parse
from pathlib import Path
from typing import Any

NODE = "local-node"
DEFAULT_PULLABLE = r"^((docker\.io/)?(library/)?python:[0-9][0-9.]*(-[a-z0-9.]+)*|clustrix-testbed/.+)$"
CGROUP_V1 = Path("/sys/fs/cgroup/memory")
CGROUP_V2 = Path("/sys/fs/cgroup")
_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_UNITS = {
    "": 1,
    "m": 0.001,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


def parse_quantity(text: str) -> float:
    """A Kubernetes quantity (``500m``, ``2``, ``64Mi``, ``1G``) as a number."""
    match = _QUANTITY.match(str(text).strip())
    if not match or match.group(2) not in _UNITS:
        raise ValueError(f"not a quantity: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known variables replaced, ``$$`` escapes a ``$``."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", repl, text)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def field_path(pod: Any, path: str) -> str:
    """The downward API's ``fieldRef.fieldPath`` of ``pod``."""
    meta = pod.metadata
    simple = {
        "metadata.name": meta.name,
        "metadata.namespace": meta.namespace,
        "metadata.uid": meta.uid,
        "spec.nodeName": NODE,
        "spec.serviceAccountName": pod.spec.service_account_name or "default",
        "status.hostIP": "127.0.0.1",
        "status.podIP": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path] or "")
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        mapping = (meta.labels if match.group(1) == "labels" else meta.annotations) or {}
        return str(mapping.get(match.group(2), ""))
    raise ValueError(f"unsupported fieldRef {path!r}")


class MissingReference(Exception):
    """A Secret or ConfigMap the container needs does not exist (yet)."""


class Kubelet:
    def __init__(
        self,
        api: Any,
        *,
        port: int,
        directory: Path,
        apiserver_port: int,
        pullable: str = DEFAULT_PULLABLE,
        gpus: int = 0,
        labels: dict[str, str] | None = None,
    ) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api)
        self.port = port
        self.directory = directory
        self.apiserver_port = apiserver_port
        self.pullable = re.compile(pullable)
        self.gpus = gpus
        self.labels = {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux", **(labels or {})}
        self.lock = threading.Lock()
        self.workers: dict[str, threading.Thread] = {}
        self.deleting: dict[str, threading.Event] = {}
        self.logs: dict[tuple[str, str, str], Path] = {}
        self.unschedulable: dict[str, str] = {}
        self.finalizing: set[str] = set()
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        mem_kib = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
        self.allocatable = {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{mem_kib}Ki",
            "pods": "250",
            "nvidia.com/gpu": str(gpus),
        }

    # ---- the Node ---------------------------------------------------------
    def node_status(self) -> dict[str, Any]:
        stamp = now()
        return {
            "capacity": self.allocatable,
            "allocatable": self.allocatable,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "the clustrix testbed kubelet is posting ready status",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
            ],
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "Debian (clustrix testbed)",
                "containerRuntimeVersion": "local-process://1",
                "kubeletVersion": "v1.20.2",
                "kubeProxyVersion": "v1.20.2",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def register(self) -> None:
        from kubernetes.client.exceptions import ApiException

        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE, "labels": self.labels}}
        try:
            self.core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.core.patch_node_status(NODE, {"status": self.node_status()})

    def heartbeat(self) -> None:
        while True:
            time.sleep(10)
            try:
                self.core.patch_node_status(NODE, {"status": self.node_status()})
            except Exception:  # noqa: BLE001 - the API server may be restarting
                continue

    # ---- pods ---------------------------------------------------------------
    def loop(self) -> None:
        from kubernetes import watch

        while True:
            try:
                listing = self.core.list_pod_for_all_namespaces()
                for pod in listing.items:
                    self.handle(pod)
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=5,
                )
                for event in stream:
                    self.handle(event["object"], deleted=event["type"] == "DELETED")
            except Exception:  # noqa: BLE001 - reconnect (API server restarted, watch expired)
                traceback.print_exc()
                time.sleep(0.5)

    def handle(self, pod: Any, *, deleted: bool = False) -> None:
        uid = pod.metadata.uid
        if deleted:
            with self.lock:
                event = self.deleting.get(uid)
            if event is not None:
                event.set()
            return
        if not pod.spec.node_name:
            if pod.metadata.deletion_timestamp is None:
                self.schedule(pod)
            return
        if pod.spec.node_name != NODE:
            return
        with self.lock:
            if pod.metadata.deletion_timestamp is not None:
                self.deleting.setdefault(uid, threading.Event()).set()
                worker = self.workers.get(uid)
                if (worker is None or not worker.is_alive()) and uid not in self.finalizing:
                    self.finalizing.add(uid)
                    threading.Thread(target=self.finalize, args=(pod,), daemon=True).start()
                return
            if uid in self.workers or (pod.status.phase in ("Succeeded", "Failed")):
                return
            self.deleting[uid] = threading.Event()
            worker = threading.Thread(target=self.run_pod, args=(pod,), name=f"pod-{pod.metadata.name}", daemon=True)
            self.workers[uid] = worker
        worker.start()

    # ---- scheduling -----------------------------------------------------------
    def fit(self, pod: Any) -> str | None:
        """Why the pod cannot run on the Node (the scheduler's words), or None."""
        selector = pod.spec.node_selector or {}
        if any(self.labels.get(k) != v for k, v in selector.items()):
            return "0/1 nodes are available: 1 node(s) didn't match node selector."
        for container in pod.spec.containers:
            requests = {**((container.resources and container.resources.limits) or {})}
            requests.update((container.resources and container.resources.requests) or {})
            for resource, amount in requests.items():
                available = self.allocatable.get(resource)
                if available is None or parse_quantity(amount) > parse_quantity(available):
                    return f"0/1 nodes are available: 1 Insufficient {resource}."
        return None

    def schedule(self, pod: Any) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        meta = pod.metadata
        reason = self.fit(pod)
        if reason is not None:
            if self.unschedulable.get(meta.uid) != reason:
                condition = {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": reason,
                    "lastTransitionTime": now(),
                }
                try:
                    self.core.patch_namespaced_pod_status(
                        meta.name, meta.namespace, {"status": {"conditions": [condition]}}
                    )
                    self.unschedulable[meta.uid] = reason
                    self.event(pod, "FailedScheduling", reason, component="default-scheduler")
                except ApiException:
                    pass
            return
        binding = client.V1Binding(
            metadata=client.V1ObjectMeta(name=meta.name, namespace=meta.namespace),
            target=client.V1ObjectReference(api_version="v1", kind="Node", name=NODE),
        )
        try:
            self.core.create_namespaced_binding(meta.namespace, binding, _preload_content=False)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def event(self, pod: Any, reason: str, message: str, *, component: str = "kubelet") -> None:
        meta = pod.metadata
        body = {
            "metadata": {"generateName": f"{meta.name}.", "namespace": meta.namespace},
            "involvedObject": {"kind": "Pod", "name": meta.name, "namespace": meta.namespace, "uid": meta.uid},
            "reason": reason,
            "message": message,
            "type": "Warning",
            "source": {"component": component, "host": NODE},
            "firstTimestamp": now(),
            "lastTimestamp": now(),
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(meta.namespace, body)
        except Exception:  # noqa: BLE001 - events are best effort, as on a real node
            pass

    # ---- running ----------------------------------------------------------------
    def patch_status(self, pod: Any, status: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        for attempt in range(30):
            try:
                self.core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": status})
                return
            except ApiException as exc:
                if exc.status == 404:
                    return
                time.sleep(min(0.2 * (attempt + 1), 2))
            except Exception:  # noqa: BLE001 - the API server may be restarting
                time.sleep(min(0.2 * (attempt + 1), 2))

    def object_data(self, kind: str, namespace: str, name: str, optional: bool = False) -> dict[str, bytes]:
        """The data of Secret or ConfigMap ``name`` (``kind`` ``"secret"`` or ``"configmap"``) as bytes."""
        from kubernetes.client.exceptions import ApiException

        read = self.core.read_namespaced_secret if kind == "secret" else self.core.read_namespaced_config_map
        try:
            found = read(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                if optional:
                    return {}
                raise MissingReference(f'{kind} "{name}" not found') from None
            raise
        if kind == "secret":
            return {k: base64.b64decode(v) for k, v in (found.data or {}).items()}
        data = {k: v.encode() for k, v in (found.data or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (found.binary_data or {}).items()})
        return data

    def environment(self, pod: Any, container: Any) -> dict[str, str]:
        namespace = pod.metadata.namespace
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "HOSTNAME": pod.metadata.name,
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.apiserver_port),
        }
        for item in container.env or []:
            source = item.value_from
            if source is None:
                env[item.name] = expand(item.value or "", env)
            elif source.secret_key_ref is not None or source.config_map_key_ref is not None:
                kind, ref = (
                    ("secret", source.secret_key_ref)
                    if source.secret_key_ref
                    else ("configmap", source.config_map_key_ref)
                )
                data = self.object_data(kind, namespace, ref.name, bool(ref.optional))
                if ref.key not in data and not ref.optional:
                    raise MissingReference(f"couldn't find key {ref.key} in {kind} {namespace}/{ref.name}")
                env[item.name] = data.get(ref.key, b"").decode()
            elif source.field_ref is not None:
                env[item.name] = field_path(pod, source.field_ref.field_path)
            elif source.resource_field_ref is not None:
                ref = source.resource_field_ref
                limits = (container.resources and container.resources.limits) or {}
                value = limits.get(ref.resource.split(".", 1)[-1], self.allocatable.get("cpu"))
                env[item.name] = str(int(parse_quantity(value) + 0.999))
        return env

    def volumes(self, pod: Any, root: Path) -> dict[str, Path]:
        """Write each secret, configMap and emptyDir volume under ``root``; name -> directory."""
        paths: dict[str, Path] = {}
        namespace = pod.metadata.namespace
        for volume in pod.spec.volumes or []:
            target = root / volume.name
            target.mkdir(mode=0o755, parents=True, exist_ok=True)
            if volume.secret is not None:
                data = self.object_data("secret", namespace, volume.secret.secret_name, bool(volume.secret.optional))
                items, mode = volume.secret.items, volume.secret.default_mode
            elif volume.config_map is not None:
                data = self.object_data(
                    "configmap", namespace, volume.config_map.name, bool(volume.config_map.optional)
                )
                items, mode = volume.config_map.items, volume.config_map.default_mode
            elif volume.empty_dir is not None:
                paths[volume.name] = target
                continue
            elif volume.host_path is not None:
                Path(volume.host_path.path).mkdir(parents=True, exist_ok=True)
                paths[volume.name] = Path(volume.host_path.path)
                continue
            else:
                raise MissingReference(
                    f"volume {volume.name!r}: only secret, configMap, emptyDir and hostPath are supported"
                )
            chosen = [(i.key, i.path, i.mode) for i in items] if items else [(k, k, None) for k in data]
            for key, rel, item_mode in chosen:
                path = target / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data.get(key, b""))
                path.chmod(item_mode or mode or 0o644)
            paths[volume.name] = target
        return paths

    def memory_cgroup(self, uid: str, container: Any) -> Path | None:
        """A memory cgroup limited to the container's ``limits.memory`` (cgroup v1, else v2), or None."""
        limits = (container.resources and container.resources.limits) or {}
        if "memory" not in limits:
            return None
        limit = str(int(parse_quantity(limits["memory"])))
        name = f"{uid}-{container.name}"
        if CGROUP_V1.is_dir():
            path = CGROUP_V1 / "clustrix-kubelet" / name
            path.mkdir(parents=True, exist_ok=True)
            (path / "memory.limit_in_bytes").write_text(limit)
            try:
                (path / "memory.memsw.limit_in_bytes").write_text(limit)  # no escape into swap
            except OSError:
                pass
            return path
        if (CGROUP_V2 / "cgroup.controllers").exists():
            parent = CGROUP_V2 / "clustrix-kubelet"
            parent.mkdir(exist_ok=True)
            for level in (CGROUP_V2, parent):
                if "memory" not in (level / "cgroup.subtree_control").read_text().split():
                    (level / "cgroup.subtree_control").write_text("+memory")
            path = parent / name
            path.mkdir(exist_ok=True)
            (path / "memory.max").write_text(limit)
            (path / "memory.swap.max").write_text("0")
            return path
        raise RuntimeError("no memory cgroup (v1 or v2) to enforce limits.memory with")

    @staticmethod
    def oom_killed(cgroup: Path) -> bool:
        """Whether the OOM killer ended a process of ``cgroup`` (v1 ``memory.oom_control``, v2 ``memory.events``)."""
        for name in ("memory.oom_control", "memory.events"):
            try:
                lines = (cgroup / name).read_text().splitlines()
            except OSError:
                continue
            return any(line.startswith("oom_kill ") and int(line.split()[1]) > 0 for line in lines)
        return False

    def run_pod(self, pod: Any) -> None:
        try:
            self._run_pod(pod)
            if self._wait_deleted(pod.metadata.uid, 0):
                self.finalize(pod)
        except Exception:  # noqa: BLE001 - report, never take the kubelet down
            traceback.print_exc()
            self.patch_status(
                pod, {"phase": "Failed", "reason": "KubeletError", "message": traceback.format_exc()[-500:]}
            )

    def _wait_deleted(self, uid: str, seconds: float) -> bool:
        event = self.deleting.get(uid)
        return bool(event and event.wait(seconds))

    def report_waiting(self, pod: Any, scheduled: dict[str, Any], reason: str, message: str) -> None:
        """Report the pod Pending, its container waiting for ``reason``."""
        container = pod.spec.containers[0]
        waiting = {
            "name": container.name,
            "ready": False,
            "restartCount": 0,
            "image": container.image,
            "imageID": "",
            "state": {"waiting": {"reason": reason, "message": message}},
        }
        self.patch_status(pod, {"phase": "Pending", "conditions": [scheduled], "containerStatuses": [waiting]})

    def _run_pod(self, pod: Any) -> None:
        uid = pod.metadata.uid
        container = pod.spec.containers[0]
        if len(pod.spec.containers) != 1:
            raise RuntimeError("this kubelet runs pods of exactly one container")
        pod_dir = self.directory / "pods" / uid
        pod_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        scheduled = {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}
        if not self.pullable.match(container.image or ""):
            message = (
                f'Failed to pull image "{container.image}": rpc error: code = NotFound desc = '
                f"failed to pull and unpack image: {container.image}: not found"
            )
            self.event(pod, "Failed", message)
            for reason in ("ErrImagePull", "ImagePullBackOff"):
                self.report_waiting(pod, scheduled, reason, message)
                if self._wait_deleted(uid, 1.0):
                    return self.finalize(pod)
            while not self._wait_deleted(uid, 5.0):
                pass
            return self.finalize(pod)
        # secrets and config maps the container refers to: wait for them, as a kubelet does
        while True:
            try:
                env = self.environment(pod, container)
                mounts = self.volumes(pod, pod_dir / "volumes")
                break
            except MissingReference as exc:
                self.report_waiting(pod, scheduled, "CreateContainerConfigError", str(exc))
                if self._wait_deleted(uid, 1.0):
                    return self.finalize(pod)
        argv = [expand(part, env) for part in [*(container.command or []), *(container.args or [])]]
        if not argv:
            raise RuntimeError("the container has no command: this kubelet cannot run an image's entrypoint")
        binds = []
        for mount in container.volume_mounts or []:
            source = mounts.get(mount.name)
            if source is None:
                raise RuntimeError(f"volumeMount {mount.name!r} has no volume")
            Path(mount.mount_path).mkdir(parents=True, exist_ok=True)
            binds.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(mount.mount_path)}")
            if mount.read_only:
                binds.append(f"mount -o remount,bind,ro {shlex.quote(mount.mount_path)}")
        workdir = Path(container.working_dir or pod_dir / "work")
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = pod_dir / f"{container.name}.log"
        with self.lock:
            self.logs[(pod.metadata.namespace, pod.metadata.name, container.name)] = log_path
        cgroup = self.memory_cgroup(uid, container)
        shell = " && ".join([*binds, 'exec "$@"'])
        full = ["unshare", "-m", "--propagation", "private", "sh", "-c", shell, "container", *argv]

        def enter_cgroup() -> None:
            if cgroup is not None:
                (cgroup / "cgroup.procs").write_text(str(os.getpid()))

        started = now()
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                full,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=enter_cgroup,
            )
        container_id = f"local-process://{proc.pid}"
        running = {
            "name": container.name,
            "ready": True,
            "restartCount": 0,
            "image": container.image,
            "imageID": container.image,
            "containerID": container_id,
            "started": True,
            "state": {"running": {"startedAt": started}},
        }
        ready = [
            {"type": t, "status": "True", "lastTransitionTime": started}
            for t in ("Initialized", "Ready", "ContainersReady")
        ]
        self.patch_status(
            pod,
            {
                "phase": "Running",
                "startTime": started,
                "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1",
                "podIPs": [{"ip": "127.0.0.1"}],
                "conditions": [scheduled, *ready],
                "containerStatuses": [running],
            },
        )
        deadline = pod.spec.active_deadline_seconds
        limit_at = time.monotonic() + deadline if deadline else None
        grace = pod.spec.termination_grace_period_seconds
        grace = 30 if grace is None else grace
        deadline_exceeded = deleted = False
        while proc.poll() is None:
            if self._wait_deleted(uid, 0.05):
                deleted = True
                self.kill(proc, grace)
                break
            if limit_at is not None and time.monotonic() >= limit_at:
                deadline_exceeded = True
                self.kill(proc, 0)
                break
        code = proc.wait()
        exit_code = 128 - code if code < 0 else code
        oom = cgroup is not None and self.oom_killed(cgroup)
        if cgroup is not None:
            try:
                cgroup.rmdir()
            except OSError:
                pass
        reason = "OOMKilled" if oom else ("Completed" if exit_code == 0 else "Error")
        terminated = {
            **running,
            "ready": False,
            "started": False,
            "state": {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": reason,
                    "startedAt": started,
                    "finishedAt": now(),
                    "containerID": container_id,
                }
            },
        }
        not_ready = [
            {"type": t, "status": "False", "reason": "PodCompleted", "lastTransitionTime": now()}
            for t in ("Ready", "ContainersReady")
        ]
        status: dict[str, Any] = {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "conditions": not_ready,
            "containerStatuses": [terminated],
        }
        if deadline_exceeded:
            status.update(
                reason="DeadlineExceeded", message="Pod was active on the node longer than the specified deadline"
            )
        self.patch_status(pod, status)
        if deleted or self._wait_deleted(uid, 0):
            self.finalize(pod)

    def kill(self, proc: subprocess.Popen[bytes], grace: float) -> None:
        try:
            os.killpg(proc.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        except ProcessLookupError:
            return
        try:
            proc.wait(max(grace, 0.1))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def finalize(self, pod: Any) -> None:
        """Remove a pod marked for deletion, as the kubelet does once its containers are gone."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        meta = pod.metadata
        try:
            self.core.delete_namespaced_pod(
                meta.name,
                meta.namespace,
                body=client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=meta.uid)),
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                traceback.print_exc()
        with self.lock:
            self.logs.pop((meta.namespace, meta.name, pod.spec.containers[0].name), None)

    # ---- logs over TLS --------------------------------------------------------
    def serve(self, certfile: Path, keyfile: Path) -> None:
        kubelet = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                if parts == ["healthz"]:
                    return self.reply(200, b"ok")
                if len(parts) != 4 or parts[0] != "containerLogs":
                    return self.reply(404, b"not found")
                with kubelet.lock:
                    path = kubelet.logs.get((parts[1], parts[2], parts[3]))
                if path is None or not path.exists():
                    return self.reply(
                        404, f"container {parts[3]} of pod {parts[1]}/{parts[2]} has no log here".encode()
                    )
                data = path.read_bytes()
                query = urllib.parse.parse_qs(url.query)
                if "tailLines" in query:
                    lines = data.splitlines(keepends=True)
                    data = b"".join(lines[-int(query["tailLines"][0]) :]) if int(query["tailLines"][0]) else b""
                if "limitBytes" in query:
                    data = data[: int(query["limitBytes"][0])]
                self.reply(200, data)

            def reply(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(certfile), str(keyfile))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--directory", type=Path, required=True)
    parser.add_argument("--apiserver-port", type=int, required=True)
    parser.add_argument("--pullable", default=DEFAULT_PULLABLE)
    parser.add_argument("--gpus", type=int, default=0)
    args = parser.parse_args()
    from kubernetes import config

    args.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert, key = args.directory / "kubelet.crt", args.directory / "kubelet.key"
    if not cert.exists():
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "30",
                "-subj",
                f"/CN={NODE}",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
        )
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    kubelet = Kubelet(
        config.new_client_from_config(args.kubeconfig),
        port=args.port,
        directory=args.directory,
        apiserver_port=args.apiserver_port,
        pullable=args.pullable,
        gpus=args.gpus,
    )
    threading.Thread(target=kubelet.serve, args=(cert, key), daemon=True).start()
    while True:
        try:
            kubelet.register()
            break
        except Exception:  # noqa: BLE001 - the API server may still be starting
            traceback.print_exc()
            time.sleep(0.5)
    threading.Thread(target=kubelet.heartbeat, daemon=True).start()
    kubelet.loop()


if __name__ == "__main__":
    main()
