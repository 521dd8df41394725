"""Write docs/configuration-reference.md from the configuration keys core and its plugins declare.

Run it with every clustrix distribution installed (the tests-all environment has them):

    .nox/tests-all/bin/python scripts/config_reference.py

tests/core/test_config.py checks that the committed page equals this rendering.
"""

from __future__ import annotations

from pathlib import Path

from clustrix.config.settings import reference_page

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration-reference.md"

if __name__ == "__main__":
    PAGE.write_text(reference_page())
    print(f"wrote {PAGE}")
