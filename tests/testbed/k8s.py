"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager, a local kubelet.

:func:`start_k8s` builds (or finds cached, see :mod:`tests.testbed.k8s_build`) the two
control-plane binaries, starts Debian's ``etcd`` and the API server with TLS and a
static token file, RBAC authorization, the controller manager (job, garbage collector,
service account, namespace and TTL-after-finished controllers; ``--port=0`` so it
listens nowhere) and the project's own kubelet (:mod:`tests.testbed.kubelet`), then
writes a kubeconfig for the ``admin`` user (group ``system:masters``). Every port is
chosen free at start time and every daemon listens on loopback only.

The stack runs until :meth:`KubeCluster.stop`; :meth:`KubeCluster.restart_apiserver`
stops and restarts the API server alone (the other daemons reconnect).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import attrs

from tests.testbed.k8s_build import build
from tests.testbed.system import apt_install, free_port, wait_for

ETCD = "/usr/bin/etcd"
ADMIN_USER = "admin"
#: A second identity with no permissions of its own, for least-privilege (RBAC) tests.
LIMITED_USER = "clustrix-limited"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def render_kubeconfig(server: str, ca_file: Path, token: str, user: str, namespace: str = "default") -> str:
    """A kubeconfig with one cluster, one token user and one context named ``clustrix-testbed``."""
    return "\n".join(
        [
            "apiVersion: v1",
            "kind: Config",
            "clusters:",
            "- name: testbed",
            "  cluster:",
            f"    server: {server}",
            f"    certificate-authority: {ca_file}",
            "users:",
            f"- name: {user}",
            "  user:",
            f"    token: {token}",
            "contexts:",
            "- name: clustrix-testbed",
            "  context:",
            "    cluster: testbed",
            f"    user: {user}",
            f"    namespace: {namespace}",
            "current-context: clustrix-testbed",
            "",
        ]
    )


@attrs.define
class KubeCluster:
    """A running testbed: where its kubeconfig is, how to reach the API, how to stop it."""

    directory: Path
    binaries: Path
    api_port: int
    etcd_port: int
    kubelet_port: int
    admin_token: str
    limited_token: str
    processes: dict[str, subprocess.Popen[bytes]] = attrs.field(factory=dict)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def ca_file(self) -> Path:
        return self.directory / "certs" / "apiserver.crt"

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def limited_kubeconfig(self) -> Path:
        """A kubeconfig for :data:`LIMITED_USER`, who may do only what a test's Role grants."""
        return self.directory / "kubeconfig-limited"

    def log(self, name: str) -> str:
        path = self.directory / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ---- processes ---------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        out = open(self.directory / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        self.processes[name] = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
        )
        out.close()

    def _stop(self, name: str, timeout: float = 10.0) -> None:
        proc = self.processes.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def _check_alive(self, name: str) -> None:
        proc = self.processes.get(name)
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)[-3000:]}")

    def _ready(self) -> bool:
        self._check_alive("kube-apiserver")
        context = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file.exists() else None
        if context is None:
            return False
        request = urllib.request.Request(
            f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def start_etcd(self) -> None:
        data = self.directory / "etcd"
        data.mkdir(exist_ok=True)
        peer = free_port()
        self._spawn(
            "etcd",
            [
                ETCD,
                "--name=testbed",
                f"--data-dir={data}",
                f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=testbed=http://127.0.0.1:{peer}",
                "--listen-metrics-urls=",
                "--quota-backend-bytes=4294967296",
            ],
        )

    def start_apiserver(self) -> None:
        d = self.directory
        self._spawn(
            "kube-apiserver",
            [
                str(self.binaries / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                "--insecure-port=0",
                f"--cert-dir={d / 'certs'}",
                f"--token-auth-file={d / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                "--endpoint-reconciler-type=none",
                "--service-cluster-ip-range=10.96.0.0/24",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={d / 'sa.pub'}",
                f"--service-account-signing-key-file={d / 'sa.key'}",
                "--kubelet-preferred-address-types=InternalIP",
                "--feature-gates=TTLAfterFinished=true",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
            ],
        )

    def start_controller_manager(self) -> None:
        d = self.directory
        self._spawn(
            "kube-controller-manager",
            [
                str(self.binaries / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                "--controllers=job,garbagecollector,serviceaccount,serviceaccount-token,namespace,ttl-after-finished",
                f"--service-account-private-key-file={d / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                "--secure-port=0",
                "--port=0",
                "--feature-gates=TTLAfterFinished=true",
                "--profiling=false",
            ],
        )

    def start_kubelet(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        self._spawn(
            "kubelet",
            [
                sys.executable,
                "-m",
                "tests.testbed.kubelet",
                f"--kubeconfig={self.kubeconfig}",
                f"--port={self.kubelet_port}",
                f"--directory={self.directory / 'kubelet'}",
                f"--apiserver-port={self.api_port}",
            ],
            env=env,
        )

    def restart_apiserver(self, down_seconds: float = 2.0) -> None:
        """Stop the API server, wait ``down_seconds``, start it again and wait until it is ready."""
        self._stop("kube-apiserver")
        time.sleep(down_seconds)
        self.start_apiserver()
        wait_for(self._ready, timeout=90, what="kube-apiserver ready again", interval=0.2)

    def stop(self) -> None:
        for name in ("kubelet", "kube-controller-manager", "kube-apiserver", "etcd"):
            self._stop(name)

    def api(self) -> Any:
        """A ``kubernetes.client.ApiClient`` logged in as the admin."""
        from kubernetes import config

        return config.new_client_from_config(str(self.kubeconfig))

    def wait_node_ready(self, timeout: float = 60) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.api())

        def ready() -> bool:
            self._check_alive("kubelet")
            try:
                node = core.read_node("local-node")
            except Exception:  # noqa: BLE001 - not registered yet
                return False
            return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])

        wait_for(ready, timeout=timeout, what="node local-node Ready", interval=0.2)

    def wait_service_account(self, namespace: str = "default", timeout: float = 60) -> None:
        """Wait until the namespace's ``default`` ServiceAccount has its token (pods need it)."""
        from kubernetes import client

        core = client.CoreV1Api(self.api())

        def ready() -> bool:
            self._check_alive("kube-controller-manager")
            try:
                account = core.read_namespaced_service_account("default", namespace)
            except Exception:  # noqa: BLE001
                return False
            return bool(account.secrets)

        wait_for(ready, timeout=timeout, what=f"ServiceAccount default in {namespace}", interval=0.2)


def _write_credentials(directory: Path, admin_token: str, limited_token: str) -> None:
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=directory)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    tokens = directory / "tokens.csv"
    tokens.write_text(
        f'{admin_token},{ADMIN_USER},admin-uid,"system:masters"\n{limited_token},{LIMITED_USER},limited-uid\n'
    )
    for name in ("sa.key", "tokens.csv"):
        (directory / name).chmod(0o600)
    (directory / "certs").mkdir(mode=0o700, exist_ok=True)


def start_k8s(directory: Path) -> KubeCluster:
    """Build or find the binaries, start etcd, the API server, the controller manager and the kubelet."""
    apt_install(["etcd-server", "openssl", "util-linux"])
    binaries = build()
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(mode=0o700, parents=True)
    cluster = KubeCluster(
        directory=directory,
        binaries=binaries,
        api_port=free_port(),
        etcd_port=free_port(),
        kubelet_port=free_port(),
        admin_token=secrets.token_hex(16),
        limited_token=secrets.token_hex(16),
    )
    _write_credentials(directory, cluster.admin_token, cluster.limited_token)
    try:
        cluster.start_etcd()
        cluster.start_apiserver()
        wait_for(cluster._ready, timeout=120, what="kube-apiserver ready", interval=0.2)
        cluster.kubeconfig.write_text(
            render_kubeconfig(cluster.server, cluster.ca_file, cluster.admin_token, ADMIN_USER)
        )
        cluster.limited_kubeconfig.write_text(
            render_kubeconfig(cluster.server, cluster.ca_file, cluster.limited_token, LIMITED_USER)
        )
        for path in (cluster.kubeconfig, cluster.limited_kubeconfig):
            path.chmod(0o600)
        cluster.start_controller_manager()
        cluster.start_kubelet()
        cluster.wait_node_ready()
        cluster.wait_service_account()
    except BaseException as exc:
        names = ("etcd", "kube-apiserver", "kube-controller-manager", "kubelet")
        logs = "\n".join(f"--- {name} ---\n{cluster.log(name)[-1500:]}" for name in names)
        cluster.stop()
        raise RuntimeError(f"the Kubernetes testbed did not come up: {exc!r}\n{logs}") from exc
    return cluster


if __name__ == "__main__":
    started = time.monotonic()
    stack = start_k8s(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/clustrix-k8s-testbed"))
    print(f"up in {time.monotonic() - started:.1f} s; KUBECONFIG={stack.kubeconfig}", flush=True)
    try:
        signal.pause()
    finally:
        stack.stop()
