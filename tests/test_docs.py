"""The documentation holds together: every docs page is linked from docs/index.md, and every relative
link in the README and docs points to a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def relative_links(md: Path) -> list[str]:
    return [t for t in LINK.findall(md.read_text(encoding="utf-8")) if not re.match(r"[a-z]+:", t)]


def test_every_docs_page_is_linked_from_the_index():
    linked = set(relative_links(ROOT / "docs" / "index.md"))
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"index.md"}
    assert pages <= linked, f"not linked from docs/index.md: {sorted(pages - linked)}"


def test_every_relative_link_resolves():
    broken = [
        f"{md.relative_to(ROOT)} → {t}"
        for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        for t in relative_links(md)
        if not (md.parent / t).exists()
    ]
    assert not broken, broken
