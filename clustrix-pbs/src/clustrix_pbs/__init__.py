"""clustrix-pbs: the ``cluster_type="pbs"`` plugin for clustrix.

The backend is registered so clustrix knows the name, but submitting a job raises
:class:`NotImplementedError`: PBS Pro / Torque support is not implemented in this release.
"""

from clustrix_pbs.plugin import PBSScheduler

__all__ = ["PBSScheduler"]
