"""A real Kubernetes cluster of one node, inside a network namespace, with a gateway on 127.0.0.1.

:func:`start_k8s` builds (or finds cached, see :mod:`tests.testbed.k8s_build`) the
Kubernetes 1.20 binaries and the images (:mod:`tests.testbed.images`), makes the network
namespace ``clustrix-k8s`` (a veth pair inside it gives the node its address
:data:`NODE_IP`; pods get addresses of :data:`POD_CIDR` on a CNI bridge inside it, so no
testbed address appears on the machine's own interfaces), and starts inside it:

- Debian's ``etcd``; ``kube-apiserver`` (TLS with a certificate of the testbed's own CA,
  a static token file, RBAC; it advertises the node address, so the ``kubernetes``
  Service's endpoint is reachable from pods), ``kube-controller-manager`` and
  ``kube-scheduler`` (listening nowhere);
- the node: Debian's ``containerd`` + ``runc`` (CNI bridge + host-local from
  ``containernetworking-plugins``), the real ``kubelet`` and ``kube-proxy`` (iptables), so
  pods reach the API server through the ``kubernetes`` Service at ``10.96.0.1``;
- two image registries (:mod:`tests.testbed.registry`: one open, also containerd's
  ``docker.io`` mirror, one that wants a login) and a package index for the pip step.

A gateway (:class:`tests.testbed.netns.Gateway`) makes the API server reachable at
``https://127.0.0.1:PORT`` for the client. The kubeconfig is for the ``admin`` user
(group ``system:masters``). The stack runs until :meth:`KubeCluster.stop`, which also
removes the pods' containers, mounts and the namespace;
:meth:`KubeCluster.restart_apiserver` stops and restarts the API server alone.

The recipe and its traps (``nsenter --net``, ``restrict_oom_score_adj``, a non-loopback
node address) are in ``shared/testbed-notes.md``.
"""

from __future__ import annotations

import json
import os
import re
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

from tests.testbed import images as images_module
from tests.testbed.k8s_build import build
from tests.testbed.netns import Namespace
from tests.testbed.registry import REGISTRY, STORAGE, render_config, write_htpasswd
from tests.testbed.system import apt_install, free_port, wait_for

ETCD = "/usr/bin/etcd"
ADMIN_USER = "admin"
#: A second identity with no permissions of its own, for least-privilege (RBAC) tests.
LIMITED_USER = "clustrix-limited"
NODE_NAME = "local-node"
NETNS = "clustrix-k8s"
#: the node's address, on a veth pair inside the namespace
NODE_IP = "172.31.250.2"
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/24"
SERVICE_IP = "10.96.0.1"
#: ports inside the namespace (the API server's is chosen free outside, for its gateway)
ETCD_PORT, REGISTRY_PORT, AUTH_REGISTRY_PORT, INDEX_PORT, KUBELET_PORT = 2379, 5000, 5001, 8099, 10250
REGISTRY_USER = "clustrix-puller"
#: what the testbed's apt must have for a real node
PACKAGES = [
    "etcd-server", "openssl", "util-linux", "iproute2", "containerd", "runc", "containernetworking-plugins",
    "docker-registry", "debootstrap", "skopeo", "iptables", "conntrack", "apache2-utils",
]  # fmt: skip
COMPONENTS = ("etcd", "registry", "registry-auth", "index", "kube-apiserver", "kube-controller-manager",
              "kube-scheduler", "containerd", "kubelet", "kube-proxy")  # fmt: skip


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


def render_containerd_config(directory: Path, pause_image: str, registry: str, plain_http: tuple[str, ...]) -> str:
    """containerd's own root, state, socket and CNI folders; pulls of ``docker.io`` go to the testbed registry."""
    d = directory / "containerd"
    cri = '[plugins."io.containerd.grpc.v1.cri"]'
    return "\n".join(
        [
            "version = 2",
            f'root = "{d / "root"}"',
            f'state = "{d / "state"}"',
            "[grpc]",
            f'  address = "{directory / "containerd.sock"}"',
            "[ttrpc]",
            f'  address = "{directory / "containerd.sock.ttrpc"}"',
            "[debug]",
            '  address = ""',
            "[metrics]",
            '  address = ""',
            '[plugins."io.containerd.internal.v1.opt"]',
            f'  path = "{d / "opt"}"',
            cri,
            f'  sandbox_image = "{pause_image}"',
            # root here has no CAP_SYS_RESOURCE: runc cannot lower oom_score_adj (shared/testbed-notes.md)
            "  restrict_oom_score_adj = true",
            "  netns_mounts_under_state_dir = true",
            '  stream_server_address = "127.0.0.1"',
            '  stream_server_port = "0"',
            f"{cri[:-1]}.cni]",
            '  bin_dir = "/usr/lib/cni"',
            f'  conf_dir = "{directory / "cni"}"',
            f'{cri[:-1]}.registry.mirrors."docker.io"]',
            f'  endpoint = ["http://{registry}"]',
            # the testbed's registries speak plain HTTP (containerd assumes HTTPS for a non-loopback host)
            *(
                line
                for host in plain_http
                for line in (f'{cri[:-1]}.registry.mirrors."{host}"]', f'  endpoint = ["http://{host}"]')
            ),
            "",
        ]
    )


def render_cni_config(directory: Path) -> str:
    """A bridge on the node with host-local addresses of :data:`POD_CIDR` (the bridge is the pods' gateway)."""
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": "clustrix-testbed",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cxk8s0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(directory / "cni-ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=1,
    )


@attrs.define
class KubeCluster:
    """A running testbed: where its kubeconfig is, how to reach the API, how to stop it."""

    directory: Path
    binaries: Path
    api_port: int
    admin_token: str
    limited_token: str
    #: ``{reference: archive}`` of the testbed's images and the Python version they carry
    python_version: str = ""
    image_archives: dict[str, Path] = attrs.field(factory=dict)
    registry_user: str = REGISTRY_USER
    registry_password: str = attrs.field(factory=lambda: secrets.token_hex(12))
    namespace: Namespace = attrs.field(factory=lambda: Namespace(NETNS, address=f"{NODE_IP}/24"))
    processes: dict[str, subprocess.Popen[bytes]] = attrs.field(factory=dict)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def ca_file(self) -> Path:
        return self.directory / "certs" / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def limited_kubeconfig(self) -> Path:
        """A kubeconfig for :data:`LIMITED_USER`, who may do only what a test's Role grants."""
        return self.directory / "kubeconfig-limited"

    @property
    def registry(self) -> str:
        """The open registry as pods name it (``host:port``, plain HTTP)."""
        return f"{NODE_IP}:{REGISTRY_PORT}"

    @property
    def auth_registry(self) -> str:
        """The registry that wants a login (:data:`REGISTRY_USER`, :attr:`registry_password`)."""
        return f"{NODE_IP}:{AUTH_REGISTRY_PORT}"

    @property
    def default_image(self) -> str:
        """What ``image=None`` becomes for this Python (``python:3.11-slim``): served by the docker.io mirror."""
        return f"python:{self.python_version}-slim"

    @property
    def prepared_image(self) -> str:
        """Debian's Python with ``cloudpickle``: the image the tests run their calls in."""
        return f"{self.registry}/clustrix-testbed/python:{self.python_version}"

    @property
    def pause_image(self) -> str:
        return f"{self.registry}/clustrix-testbed/pause:1"

    def image(self, name: str) -> str:
        """``nonroot``, ``entrypoint``, ...: a testbed image by its short name, in the open registry."""
        return f"{self.registry}/clustrix-testbed/{name}:{self.python_version}"

    def log(self, name: str) -> str:
        path = self.directory / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ---- processes ---------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        out = open(self.directory / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        self.processes[name] = subprocess.Popen(
            self.namespace.enter(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
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

    def inside(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace (as the node's own tools would)."""
        return subprocess.run(self.namespace.enter(argv), capture_output=True, text=True, check=False, timeout=timeout)

    def _listening(self, port: int) -> bool:
        return str(port) in self.inside(["ss", "-Hltn", f"sport = :{port}"], timeout=10).stdout

    def _ready(self) -> bool:
        self._check_alive("kube-apiserver")
        if not self.ca_file.exists():
            return False
        context = ssl.create_default_context(cafile=str(self.ca_file))
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
        self._spawn(
            "etcd",
            [
                ETCD,
                "--name=testbed",
                f"--data-dir={data}",
                f"--listen-client-urls=http://127.0.0.1:{ETCD_PORT}",
                f"--advertise-client-urls=http://127.0.0.1:{ETCD_PORT}",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=testbed=http://127.0.0.1:2380",
                "--listen-metrics-urls=",
                "--quota-backend-bytes=4294967296",
                "--unsafe-no-fsync",
            ],
        )

    def start_registries(self) -> None:
        STORAGE.mkdir(parents=True, exist_ok=True)
        htpasswd = self.directory / "registry.htpasswd"
        write_htpasswd(htpasswd, self.registry_user, self.registry_password)
        for name, port, auth in (("registry", REGISTRY_PORT, None), ("registry-auth", AUTH_REGISTRY_PORT, htpasswd)):
            config = self.directory / f"{name}.yml"
            config.write_text(render_config(port, STORAGE, auth))
            self._spawn(name, [REGISTRY, "serve", str(config)])
        self._spawn("index", ["/usr/bin/python3", "-m", "http.server", "--directory", str(self.directory / "index"),
                              "--bind", NODE_IP, str(INDEX_PORT)])  # fmt: skip

    def push_images(self, log: Any = print) -> None:
        """Push every image the registry does not hold in this content yet (a marker per archive)."""
        wait_for(lambda: self._listening(REGISTRY_PORT), timeout=30, what="the testbed registry", interval=0.1)
        for reference, archive in self.image_archives.items():
            if not archive.with_suffix(".pushed").is_file():
                log(f"pushing {reference}")
                images_module.push(archive, reference, f"127.0.0.1:{REGISTRY_PORT}", self.namespace.enter)

    def start_apiserver(self) -> None:
        d = self.directory
        self._spawn(
            "kube-apiserver",
            [
                str(self.binaries / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{ETCD_PORT}",
                "--bind-address=0.0.0.0",  # inside the namespace: loopback (the gateway) and the node address
                f"--advertise-address={NODE_IP}",
                f"--secure-port={self.api_port}",
                "--insecure-port=0",
                f"--tls-cert-file={d / 'certs' / 'apiserver.crt'}",
                f"--tls-private-key-file={d / 'certs' / 'apiserver.key'}",
                f"--token-auth-file={d / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
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
                "--controllers=job,garbagecollector,serviceaccount,serviceaccount-token,namespace,"
                "ttl-after-finished,endpoint,endpointslice,podgc,nodelifecycle",
                f"--service-account-private-key-file={d / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                "--secure-port=0",
                "--port=0",
                "--feature-gates=TTLAfterFinished=true",
                "--profiling=false",
                "--node-monitor-period=1s",  # lifts the node's not-ready taint within a second of Ready
            ],
        )

    def start_scheduler(self) -> None:
        self._spawn(
            "kube-scheduler",
            [
                str(self.binaries / "kube-scheduler"),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--secure-port=0",
                "--port=0",
                "--profiling=false",
            ],
        )

    def start_containerd(self) -> None:
        d = self.directory
        (d / "cni").mkdir(exist_ok=True)
        (d / "cni" / "10-clustrix.conflist").write_text(render_cni_config(d))
        config = d / "containerd.toml"
        config.write_text(
            render_containerd_config(d, self.pause_image, self.registry, (self.registry, self.auth_registry))
        )
        self._spawn("containerd", ["/usr/bin/containerd", f"--config={config}"])
        wait_for(lambda: (d / "containerd.sock").exists(), timeout=30, what="containerd's socket", interval=0.1)

    def start_kubelet(self) -> None:
        d = self.directory
        root = d / "kubelet"
        root.mkdir(exist_ok=True)
        self._spawn(
            "kubelet",
            [
                str(self.binaries / "kubelet"),
                f"--kubeconfig={self.kubeconfig}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                f"--address={NODE_IP}",
                f"--port={KUBELET_PORT}",
                "--read-only-port=0",
                "--healthz-port=0",
                f"--root-dir={root}",
                f"--cert-dir={root / 'pki'}",
                f"--volume-plugin-dir={root / 'volume-plugins'}",
                "--container-runtime=remote",
                f"--container-runtime-endpoint=unix://{d / 'containerd.sock'}",
                f"--containerd={d / 'containerd.sock'}",
                "--runtime-request-timeout=5m",
                "--cgroup-driver=cgroupfs",
                "--fail-swap-on=false",
                "--cgroups-per-qos=false",
                "--enforce-node-allocatable=",
                "--eviction-hard=",
                "--image-gc-high-threshold=100",
                "--image-gc-low-threshold=99",
                "--serialize-image-pulls=false",
                f"--pod-infra-container-image={self.pause_image}",
                "--node-status-update-frequency=4s",
                "--sync-frequency=10s",
                "--anonymous-auth=true",
                "--authorization-mode=AlwaysAllow",
            ],
        )

    def start_kube_proxy(self) -> None:
        self._spawn(
            "kube-proxy",
            [
                str(self.binaries / "kube-proxy"),
                f"--kubeconfig={self.kubeconfig}",
                "--proxy-mode=iptables",
                f"--hostname-override={NODE_NAME}",
                f"--bind-address={NODE_IP}",
                f"--cluster-cidr={POD_CIDR}",
                "--healthz-bind-address=127.0.0.1:10256",
                "--metrics-bind-address=127.0.0.1:10249",
                "--conntrack-max-per-core=0",
                "--conntrack-tcp-timeout-established=0",
                "--conntrack-tcp-timeout-close-wait=0",
                "--profiling=false",
            ],
        )

    def restart_apiserver(self, down_seconds: float = 2.0) -> None:
        """Stop the API server, wait ``down_seconds``, start it again and wait until it is ready."""
        self._stop("kube-apiserver")
        time.sleep(down_seconds)
        self.start_apiserver()
        wait_for(self._ready, timeout=90, what="kube-apiserver ready again", interval=0.2)

    def serve_packages(self, requirements: list[str]) -> None:
        """Put ``name==version`` wheels in the testbed's package index, as a site's PyPI mirror would hold them."""
        for wheel in images_module.wheels_for(requirements):
            _serve_wheel(self.directory, wheel)

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        """containerd's own client on the node's runtime (namespace ``k8s.io``, where the kubelet's containers live)."""
        return self.inside(
            ["ctr", f"--address={self.directory / 'containerd.sock'}", "-n", "k8s.io", *args], timeout=60
        )

    def containers(self) -> set[str]:
        """The ids of the containers that have a running task on the node."""
        return set(self.ctr("tasks", "ls", "-q").stdout.split())

    def _kill_containers(self) -> None:
        """Kill every container of the node (their shims outlive containerd) and the shims themselves."""
        sock = str(self.directory / "containerd.sock")
        if (self.directory / "containerd.sock").exists():
            for task in self.containers():
                self.ctr("tasks", "kill", "-s", "SIGKILL", task)
        shims = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and sock.encode() in argv:
                shims.append(int(proc.name))
        for pid in shims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _unmount(self) -> None:
        """Unmount what containerd and the kubelet mounted under the testbed's folder (deepest first)."""
        prefix = str(self.directory) + "/"
        mounts = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                mounts.append(point)
        for point in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)

    def stop(self) -> None:
        for name in ("kube-proxy", "kubelet", "kube-scheduler", "kube-controller-manager"):
            self._stop(name)
        self._kill_containers()
        for name in ("prepull", "containerd", "kube-apiserver", "etcd", "index", "registry-auth", "registry"):
            self._stop(name)
        self._kill_containers()
        self._unmount()
        self.namespace.down()

    def api(self) -> Any:
        """A ``kubernetes.client.ApiClient`` logged in as the admin."""
        from kubernetes import config

        return config.new_client_from_config(str(self.kubeconfig))

    def wait_node_ready(self, timeout: float = 90) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.api())

        def ready() -> bool:
            for name in ("containerd", "kubelet", "kube-proxy", "kube-scheduler"):
                self._check_alive(name)
            try:
                node = core.read_node(NODE_NAME)
            except Exception:  # noqa: BLE001 - not registered yet
                return False
            ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
            # the node lifecycle controller lifts the not-ready taint the kubelet registers with
            return ready and not node.spec.taints

        wait_for(ready, timeout=timeout, what=f"node {NODE_NAME} Ready and untainted", interval=0.2)

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


_SANS = (
    f"subjectAltName=IP:127.0.0.1,IP:{NODE_IP},IP:{SERVICE_IP},DNS:localhost,DNS:kubernetes,"
    "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
)


def _write_credentials(directory: Path, admin_token: str, limited_token: str) -> None:
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=directory)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    tokens = directory / "tokens.csv"
    tokens.write_text(
        f'{admin_token},{ADMIN_USER},admin-uid,"system:masters"\n{limited_token},{LIMITED_USER},limited-uid\n'
    )
    certs = directory / "certs"
    certs.mkdir(mode=0o700, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=clustrix-testbed-ca",
             "-days", "30", cwd=certs)  # fmt: skip
    _openssl("req", *ec, "-keyout", "apiserver.key", "-out", "apiserver.csr", "-subj", "/CN=kube-apiserver",
             cwd=certs)  # fmt: skip
    (certs / "san.ext").write_text(_SANS + "\n")
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "apiserver.crt", "-days", "30", "-extfile", "san.ext", cwd=certs)  # fmt: skip
    for path in (directory / "sa.key", tokens, certs / "ca.key", certs / "apiserver.key"):
        path.chmod(0o600)


def _write_index(directory: Path) -> None:
    """The pip step's package index (PEP 503 pages as plain folders) of :data:`images.WHEELS`."""
    for name, version in images_module.WHEELS.items():
        _serve_wheel(directory, images_module.wheel(name, version))


def _serve_wheel(directory: Path, wheel: Path) -> None:
    name = wheel.name.split("-", 1)[0]
    project = directory / "index" / "simple" / re.sub(r"[-_.]+", "-", name).lower()
    project.mkdir(parents=True, exist_ok=True)
    if not (project / wheel.name).exists():
        shutil.copy2(wheel, project / wheel.name)


def index_url() -> str:
    return f"http://{NODE_IP}:{INDEX_PORT}/simple/"


def start_k8s(directory: Path, log: Any = None) -> KubeCluster:
    """Build or find the binaries and images, then start the whole stack in its namespace."""
    say = log or (lambda message: sys.stderr.write(f"[k8s testbed] {message}\n"))
    apt_install(PACKAGES)
    binaries = build(log=say)
    python_version, archives = images_module.build_images(index_url(), log=say)
    namespace = Namespace(NETNS, address=f"{NODE_IP}/24")
    _clear_leftovers(namespace)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(mode=0o700, parents=True)
    api_port = free_port()
    cluster = KubeCluster(
        directory=directory,
        binaries=binaries,
        api_port=api_port,
        admin_token=secrets.token_hex(16),
        limited_token=secrets.token_hex(16),
        python_version=python_version,
        image_archives=archives,
        namespace=namespace,
    )
    started = time.monotonic()
    _write_credentials(directory, cluster.admin_token, cluster.limited_token)
    _write_index(directory)
    try:
        namespace.up()
        inner = namespace.links[0]
        subprocess.run(["ip", "-n", NETNS, "route", "replace", "default", "dev", inner], check=True)
        cluster.start_etcd()
        cluster.start_registries()
        cluster.start_apiserver()
        namespace.gateway(api_port).start()
        cluster.kubeconfig.write_text(
            render_kubeconfig(cluster.server, cluster.ca_file, cluster.admin_token, ADMIN_USER)
        )
        cluster.limited_kubeconfig.write_text(
            render_kubeconfig(cluster.server, cluster.ca_file, cluster.limited_token, LIMITED_USER)
        )
        for path in (cluster.kubeconfig, cluster.limited_kubeconfig):
            path.chmod(0o600)
        cluster.push_images(log=say)
        cluster.start_containerd()
        # every image shares the Debian layer: unpack it once now, while the control plane starts
        cluster._spawn("prepull", ["ctr", f"--address={directory / 'containerd.sock'}", "-n", "k8s.io", "images",
                                   "pull", "--plain-http", cluster.pause_image])  # fmt: skip
        cluster.start_kubelet()  # it registers the node as soon as the API server answers
        wait_for(cluster._ready, timeout=120, what="kube-apiserver ready", interval=0.2)
        say(f"API server ready after {time.monotonic() - started:.1f} s")
        cluster.start_controller_manager()
        cluster.start_scheduler()
        cluster.start_kube_proxy()
        cluster.wait_node_ready()
        say(f"node Ready after {time.monotonic() - started:.1f} s")
        cluster.wait_service_account()
    except BaseException as exc:
        logs = "\n".join(f"--- {name} ---\n{cluster.log(name)[-1500:]}" for name in COMPONENTS)
        cluster.stop()
        raise RuntimeError(f"the Kubernetes testbed did not come up: {exc!r}\n{logs}") from exc
    return cluster


def _clear_leftovers(namespace: Namespace) -> None:
    """A stack a crashed run left behind: stop whatever still runs in the namespace, then delete it."""
    if not namespace.exists():
        return
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and namespace.holds(int(proc.name)):
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass
    namespace.down()


if __name__ == "__main__":
    started = time.monotonic()
    stack = start_k8s(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/clustrix-k8s-testbed"))
    print(f"up in {time.monotonic() - started:.1f} s; KUBECONFIG={stack.kubeconfig}", flush=True)
    try:
        signal.pause()
    finally:
        stack.stop()
