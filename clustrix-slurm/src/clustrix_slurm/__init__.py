"""clustrix-slurm: run ``@cluster`` functions as SLURM jobs and job arrays.

Install it next to ``clustrix-core`` and set ``cluster_type="slurm"``; it works on the
login node itself and, with ``clustrix-ssh``, from a laptop through ``cluster_host``.
The scheduler is clustrix's batch engine with :class:`~clustrix_slurm.dialect.SlurmDialect`.
"""

from clustrix_slurm.dialect import SlurmDialect

__all__ = ["SlurmDialect"]
__version__ = "0.1.0"
