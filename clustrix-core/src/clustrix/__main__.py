"""``python -m clustrix``: the ``clustrix`` command, for when the script is not on PATH."""

from __future__ import annotations

import sys

from clustrix.cli.app import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m clustrix"))
