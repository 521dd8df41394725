"""clustrix-sge: the ``cluster_type="sge"`` plugin for clustrix.

The backend is registered so clustrix knows the name, but submitting a job raises
:class:`NotImplementedError`: Grid Engine support is not implemented in this release.
"""

from clustrix_sge.plugin import SGEScheduler

__all__ = ["SGEScheduler"]
