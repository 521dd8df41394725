"""The user's API: ``@cluster``, ``Executor``, futures, ``Job`` and the progress bar."""
