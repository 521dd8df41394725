"""clustrix-k8s: the ``cluster_type="kubernetes"`` plugin for clustrix (Kubernetes Jobs through the official client)."""

from clustrix_k8s.scheduler import KubernetesScheduler

__all__ = ["KubernetesScheduler"]
