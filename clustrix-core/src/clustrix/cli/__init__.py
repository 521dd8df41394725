"""The ``clustrix`` command: configuration, installed plugins, and jobs in the registry.

- :mod:`~clustrix.cli.app`: the parser and ``main`` (the ``clustrix`` console script;
  ``python -m clustrix`` and ``python -m clustrix.cli`` run it too), ``config show``, ``plugins``.
- :mod:`~clustrix.cli.jobs`: ``jobs``, ``status``, ``logs``, ``result``, ``cancel``.
- :mod:`~clustrix.cli.doctor`: ``doctor``.
- :mod:`~clustrix.cli.preview`: ``code`` and ``submit --dry-run``.
"""
