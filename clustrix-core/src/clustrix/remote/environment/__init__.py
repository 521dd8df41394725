"""Environment replication: capture the local Python environment, rebuild it once per hash remotely.

- :mod:`~clustrix.remote.environment.capture`: the snapshot of this interpreter (Python
  version, installed distributions and their sources); core's ``clustrix_capture_environment``
  hookimpl.
- :mod:`~clustrix.remote.environment.activation`: the job's shell before its Python starts
  (modules, conda, the user's commands, the variables file, ``PYTHONPATH``) and
  :class:`~clustrix.remote.environment.activation.RemoteEnvironment`.
- :mod:`~clustrix.remote.environment.interpreter`: which remote ``python`` a job runs, the
  checks of its version and imports, and the errors their failures become.
- :mod:`~clustrix.remote.environment.venv`: the remote venv (one per environment key) and the
  script that builds it.
- :mod:`~clustrix.remote.environment.wheels`: distributions installed here from a local path,
  built into wheels to ship.
- :mod:`~clustrix.remote.environment.target`: the remote ``python3``'s wheel tags and whether
  it reaches a package index (the probe in the build script).
- :mod:`~clustrix.remote.environment.wheelhouse`: for a remote side with no index, wheels
  downloaded here for its tags and kept there once per file hash.
- :mod:`~clustrix.remote.environment.prepare`: making it all exist on a remote through a
  transport (once per process), or planning it for a dry run.

Editable installs (``pip install -e .``) are never installed remotely: their source travels
as the user's own code (:mod:`clustrix.remote.localcode`). The functions that render shell
scripts are pure, so every backend that runs a script on a host (a SLURM login node, a plain
ssh host) runs the same scripts through its own transport.
"""
