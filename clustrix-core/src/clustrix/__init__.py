"""clustrix: put ``@cluster(...)`` on a function and run it on a cluster, or on local cores."""
