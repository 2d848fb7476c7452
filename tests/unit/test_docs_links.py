"""The README and the docs link only to files that exist in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted(
    [
        REPO / "README.md",
        REPO / "CHANGELOG.md",
        REPO / "clients/typescript/README.md",
        *REPO.glob("docs/**/*.md"),
        *REPO.glob("bench/**/*.md"),
        *REPO.glob("deploy/**/*.md"),
    ]
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_points_at_a_file_of_the_repository(doc: Path) -> None:
    assert doc.exists()
    missing = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or an anchor in the same page
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            missing.append(target)
    assert missing == []


def test_the_link_pattern_finds_the_readme_links() -> None:
    targets = LINK.findall((REPO / "README.md").read_text())
    assert "docs/design/architecture.md" in targets and len(targets) >= 10
