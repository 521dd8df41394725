#!/usr/bin/env bash
# The whole test suite, as CI runs it: lint, types, docs, build, and the tests with every
# distribution together (tests-all) and with clustrix-core plus one plugin at a time.
# Extra arguments go to nox, e.g. `bash scripts/test.sh -R` or `bash scripts/test.sh -- -x -k slurm`.
# Testbeds (sshd, SLURM, ...) install their own Debian packages from within the tests.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PIP_DISABLE_PIP_VERSION_CHECK=1
SESSIONS=(lint types docs build tests-all tests-core tests-core-pythons tests-slurm tests-pbs tests-sge tests-k8s tests-ssh)
RESULTS=build/test-results

set -e
if [ ! -x .venv-nox/bin/nox ] || [ ! -x .venv-nox/bin/uv ]; then
    echo "==> creating .venv-nox with nox and uv"
    python3 -m venv .venv-nox
    .venv-nox/bin/python -m pip install --quiet --upgrade pip
    .venv-nox/bin/python -m pip install --quiet "nox>=2024.10.9" "uv>=0.5"
fi
set +e

rm -rf "$RESULTS"
PATH="$PWD/.venv-nox/bin:$PATH" .venv-nox/bin/nox --sessions "${SESSIONS[@]}" "$@"
status=$?

# One closing line over every pytest run of the sessions above (each writes a JUnit XML file).
.venv-nox/bin/python - "$RESULTS" "$status" <<'PY'
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

results, status = Path(sys.argv[1]), int(sys.argv[2])
total = {"passed": 0, "failed": 0, "skipped": 0}
for xml in sorted(results.glob("*.xml")):
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in ET.parse(xml).getroot().iter("testsuite"):
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    failed = counts["failures"] + counts["errors"]
    passed = counts["tests"] - failed - counts["skipped"]
    print(f"  {xml.stem}: {passed} passed, {failed} failed, {counts['skipped']} skipped")
    total["passed"] += passed
    total["failed"] += failed
    total["skipped"] += counts["skipped"]
print(f"nox sessions: {'all succeeded' if status == 0 else f'FAILED (exit {status})'}")
print(f"tests: {total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped")
PY
exit "$status"
