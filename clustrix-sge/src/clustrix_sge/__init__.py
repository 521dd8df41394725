"""clustrix-sge: the ``cluster_type="sge"`` plugin for clustrix (Grid Engine: qsub, qstat, qacct, qdel).

Son of Grid Engine, Sun/Oracle Grid Engine and Univa/Altair Grid Engine, on the submit
host itself or over SSH, through the batch engine of clustrix core.
"""

from clustrix_sge.dialect import SGEDialect

__all__ = ["SGEDialect"]
