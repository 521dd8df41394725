"""Batch schedulers (SLURM, PBS, SGE, a site's own) as pure dialects over one engine.

:mod:`clustrix.batch.dialect` holds the contract a scheduler implements (argv, parsers,
the state table: no I/O); the engine (:mod:`clustrix.batch.engine`) implements the routed
scheduler hooks once for every dialect.
"""

from clustrix.batch.dialect import FAILURE_PRIORITY, Dialect, ScriptJob, SiteInfo, TaskRecord

__all__ = ["FAILURE_PRIORITY", "Dialect", "ScriptJob", "SiteInfo", "TaskRecord"]
