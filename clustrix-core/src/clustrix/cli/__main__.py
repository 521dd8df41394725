"""``python -m clustrix.cli``: the ``clustrix`` command (as ``python -m clustrix``)."""

from __future__ import annotations

import sys

from clustrix.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
