#!/usr/bin/env bash
# Run the quickstart example on this machine: creates .venv (if missing), installs
# ./clustrix-core into it and runs examples/quickstart.py. Needs python3 (>= 3.10) with venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PIP_DISABLE_PIP_VERSION_CHECK=1
PYTHON="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv .venv
fi
echo "==> installing ./clustrix-core into .venv"
# --force-reinstall --no-deps after the normal install: always the current source, even at the same version
.venv/bin/python -m pip install --quiet ./clustrix-core
.venv/bin/python -m pip install --quiet --force-reinstall --no-deps ./clustrix-core
echo "==> running examples/quickstart.py"
exec .venv/bin/python examples/quickstart.py "$@"
