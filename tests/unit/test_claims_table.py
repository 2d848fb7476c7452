"""docs/design/claims.md names tests that exist: a renamed or deleted test cannot leave a claim unpinned."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLAIMS = REPO / "docs" / "design" / "claims.md"
REFERENCE = re.compile(r"`(?:([\w/]*test_\w+\.py))?(?:::(test_\w+))?`")


def _test_file(name: str) -> Path:
    matches = [p for p in (REPO / "tests").rglob(Path(name).name) if str(p).endswith(name)]
    assert len(matches) == 1, f"{name}: {matches}"
    return matches[0]


def test_every_test_the_claims_table_names_exists() -> None:
    checked = 0
    for line in CLAIMS.read_text().splitlines():
        current: Path | None = None
        for file_name, test_name in REFERENCE.findall(line):
            if file_name:
                current = _test_file(file_name)
            if test_name:
                assert current is not None, f"{test_name} has no file before it: {line}"
                assert re.search(rf"def {test_name}\b", current.read_text()), f"{current.name}::{test_name}"
                checked += 1
    assert checked >= 50  # the table was read
