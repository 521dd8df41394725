"""clustrix-pbs: the ``cluster_type="pbs"`` plugin for clustrix (PBS Pro, OpenPBS and Torque).

The scheduler is clustrix's batch engine with a PBS dialect per flavour
(:mod:`clustrix_pbs.dialect`); rendering and parsing are pure functions
(:mod:`clustrix_pbs.directives`, :mod:`clustrix_pbs.parse`, :mod:`clustrix_pbs.states`).
"""

from clustrix_pbs.dialect import PBSProDialect, TorqueDialect
from clustrix_pbs.scheduler import PBSScheduler

__all__ = ["PBSProDialect", "PBSScheduler", "TorqueDialect"]
