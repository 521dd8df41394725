"""clustrix-k8s: the ``cluster_type="kubernetes"`` plugin for clustrix.

The backend is registered so clustrix knows the name, but submitting a job raises
:class:`NotImplementedError`: Kubernetes support is not implemented in this release.
"""

from clustrix_k8s.plugin import KubernetesScheduler

__all__ = ["KubernetesScheduler"]
