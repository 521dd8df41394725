"""clustrix-slurm: run ``@cluster`` functions as SLURM jobs and job arrays.

Install it next to ``clustrix-core`` and set ``cluster_type="slurm"``; it works on the
login node itself and, with ``clustrix-ssh``, from a laptop through ``cluster_host``.
"""

from clustrix_slurm.scheduler import SbatchRejectedError, SlurmScheduler

__all__ = ["SbatchRejectedError", "SlurmScheduler"]
__version__ = "0.1.0"
