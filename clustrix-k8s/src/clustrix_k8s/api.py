"""The Kubernetes API as this backend uses it: JSON in and out through the official client.

Replies are read as raw JSON (``_preload_content=False``): a list of Secrets holding a
50 MB result, or of a thousand Jobs, is parsed once by ``json`` instead of being turned
into model objects. Every request is counted (:attr:`KubeApi.calls`), so benchmarks and
tests can state the API calls a job costs. A 401 or 403 becomes
:class:`KubernetesPermissionError`, naming the verb, resource and namespace the
credentials lack, which is what the Role in ``docs/kubernetes.md`` must grant.
"""

from __future__ import annotations

import collections
import json
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from clustrix.errors import ClustrixError, ConfigurationError

if TYPE_CHECKING:
    from clustrix.config.settings import ClusterConfig

IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
#: API group and plural of every resource the backend touches.
RESOURCES = {
    "jobs": ("batch", "v1"),
    "secrets": ("", "v1"),
    "configmaps": ("", "v1"),
    "pods": ("", "v1"),
    "serviceaccounts": ("", "v1"),
    "roles": ("rbac.authorization.k8s.io", "v1"),
    "rolebindings": ("rbac.authorization.k8s.io", "v1"),
}


class KubernetesAPIError(ClustrixError):
    """The API server refused or failed a request; ``status`` is the HTTP status."""

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubernetesPermissionError(KubernetesAPIError, PermissionError):
    """The credentials may not do what the backend needs (HTTP 401 or 403)."""


def _path(resource: str, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    group, version = RESOURCES[resource]
    base = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    path = f"{base}/namespaces/{namespace}/{resource}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


def permission_message(status: int, verb: str, resource: str, namespace: str, body: str) -> str:
    """What a 401/403 means for the user, naming the RBAC rule that is missing (pure)."""
    try:
        detail = json.loads(body).get("message", "")
    except (ValueError, AttributeError):
        detail = body.strip()[:300]
    if status == 401:
        return (
            f"the Kubernetes API server rejected the credentials (401 Unauthorized) while trying to {verb} "
            f"{resource} in namespace {namespace!r}: the token or certificate of your kubeconfig is invalid or "
            f"expired; log in again or check kubeconfig/kube_context. ({detail})"
        )
    group = RESOURCES.get(resource.split("/")[0], ("", ""))[0]
    group_text = f'apiGroups: ["{group}"]' if group else 'apiGroups: [""]'
    return (
        f"the Kubernetes API refused to {verb} {resource} in namespace {namespace!r} (403 Forbidden): the Role "
        f'bound to your user needs the verb "{verb}" on resource "{resource}" ({group_text}); see the Role in '
        f"docs/kubernetes.md. Server said: {detail}"
    )


def _error(status: int, text: str, verb: str, what: str, namespace: str) -> KubernetesAPIError:
    if status in (401, 403):
        return KubernetesPermissionError(permission_message(status, verb, what, namespace, text), status=status)
    reason = ""
    try:
        parsed = json.loads(text)
        reason, text = parsed.get("reason", ""), parsed.get("message", text)
    except (ValueError, AttributeError):
        pass
    return KubernetesAPIError(
        f"the Kubernetes API could not {verb} {what} in namespace {namespace!r} ({status}): {text}",
        status=status,
        reason=reason,
    )


class KubeApi:
    """One API client (kubeconfig file and context, or in-cluster), with counted JSON requests."""

    def __init__(self, api_client: Any, server: str, namespace: str = "default") -> None:
        self.client = api_client
        self.server = server
        #: The namespace of the kubeconfig context, or the pod's own in the cluster.
        self.namespace = namespace
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        verb: str,
        resource: str,
        namespace: str,
        *,
        name: str | None = None,
        subresource: str | None = None,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        raw: bool = False,
        timeout: float = 120.0,
    ) -> Any:
        """One HTTP request; the parsed JSON reply (the text with ``raw``); errors translated."""

        with self._lock:
            self.calls[f"{verb} {resource}{'/' + subresource if subresource else ''}"] += 1
        path = _path(resource, namespace, name, subresource)
        what = f"{resource}/{subresource}" if subresource else resource
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        headers = {"Accept": "application/json", "Content-Type": content_type}
        status, data = self._send(method, path, params, headers, body, timeout)
        text = data.decode(errors="replace") if isinstance(data, bytes) else str(data or "")
        if not 200 <= status <= 299:
            raise _error(status, text, verb, what, namespace)
        if raw:
            return text
        return json.loads(text) if text else None

    def _send(
        self, method: str, path: str, params: list[tuple[str, Any]], headers: dict[str, str], body: Any, timeout: float
    ) -> tuple[int, Any]:
        """One HTTP exchange through the client, whichever generation of the generated client is installed."""
        from kubernetes.client.exceptions import ApiException

        client = self.client
        try:
            if hasattr(client, "param_serialize"):  # kubernetes >= 35: serialize, then send
                method_, url, headers_, body_, post = client.param_serialize(
                    method=method,
                    resource_path=path,
                    query_params=params,
                    header_params=headers,
                    body=body,
                    auth_settings=["BearerToken"],
                )
                response = client.call_api(
                    method_, url, header_params=headers_, body=body_, post_params=post, _request_timeout=timeout
                )
                return int(response.status), response.read()
            response = client.call_api(
                path,
                method,
                query_params=params,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
            raw = response[0] if isinstance(response, tuple) else response
            return int(raw.status), raw.data
        except ApiException as exc:
            return int(exc.status or 0), exc.body or b""

    def version(self) -> dict[str, Any]:
        """The server's ``/version`` (major, minor, gitVersion)."""
        with self._lock:
            self.calls["get version"] += 1
        status, data = self._send("GET", "/version", [], {"Accept": "application/json"}, None, 60.0)
        if status != 200:
            raise _error(status, data.decode(errors="replace"), "get", "/version", "")
        return dict(json.loads(data))

    def post_cluster(self, path: str, body: Any) -> Any:
        """POST ``body`` to a cluster-scoped ``path`` (a review: SelfSubjectRulesReview); the parsed reply."""
        with self._lock:
            self.calls[f"create {path.rsplit('/', 1)[-1]}"] += 1
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        status, data = self._send("POST", path, [], headers, body, 60.0)
        text = data.decode(errors="replace") if isinstance(data, bytes) else str(data or "")
        if not 200 <= status <= 299:
            raise _error(status, text, "create", path.rsplit("/", 1)[-1], "")
        return json.loads(text)

    def total_calls(self) -> int:
        with self._lock:
            return sum(self.calls.values())


_apis: dict[tuple[Any, ...], KubeApi] = {}
_apis_lock = threading.Lock()


def api_for(config: ClusterConfig) -> KubeApi:
    """The shared client for ``kubeconfig``/``kube_context`` (or in-cluster config), made once."""
    kubeconfig = config.get("kubeconfig")
    context = config.get("kube_context")
    key = (kubeconfig, context)
    with _apis_lock:
        api = _apis.get(key)
        if api is not None:
            return api
        from kubernetes import client
        from kubernetes import config as kube_config

        configuration = client.Configuration()
        namespace = "default"
        try:
            if (
                kubeconfig is None
                and context is None
                and os.path.exists(IN_CLUSTER_TOKEN)
                and os.environ.get("KUBERNETES_SERVICE_HOST")
            ):
                kube_config.load_incluster_config(client_configuration=configuration)
                with open(IN_CLUSTER_NAMESPACE, encoding="utf-8") as fh:
                    namespace = fh.read().strip() or namespace
            else:
                path = os.path.expanduser(kubeconfig) if kubeconfig else None
                kube_config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
                contexts, active = kube_config.list_kube_config_contexts(config_file=path)
                chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
                namespace = ((chosen or {}).get("context") or {}).get("namespace") or namespace
        except (kube_config.ConfigException, OSError, TypeError) as exc:
            where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise ConfigurationError(
                f"cannot load the Kubernetes configuration ({where}{', context ' + context if context else ''}): "
                f"{exc}; set kubeconfig= to a kubeconfig file (and kube_context= to one of its contexts), "
                "or run inside a pod with a ServiceAccount"
            ) from None
        api = KubeApi(client.ApiClient(configuration), configuration.host, namespace)
        _apis[key] = api
        return api


def forget_clients() -> None:
    """Drop the cached clients (tests that switch credentials)."""
    with _apis_lock:
        _apis.clear()
