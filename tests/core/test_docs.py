"""The README and docs/: every relative link resolves to a file, and every #anchor to a heading in it
(GitHub's slugs), so moving sections out of the README leaves nothing dangling."""

import re
from pathlib import Path

from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _tokens(path: Path):
    return MarkdownIt().parse(path.read_text())


def _slugs(path: Path) -> set[str]:
    tokens = _tokens(path)
    return {re.sub(r"[^\w\- ]", "", tokens[i + 1].content.lower()).replace(" ", "-")
            for i, t in enumerate(tokens) if t.type == "heading_open"}


def _links(path: Path) -> list[str]:
    out = []
    for token in _tokens(path):
        for child in token.children or []:
            if child.type == "link_open":
                out.append(child.attrs["href"])
    return out


def test_every_relative_link_and_anchor_resolves():
    checked = 0
    for page in PAGES:
        for href in _links(page):
            if re.match(r"^[a-z]+:", href):
                continue  # http(s), mailto: not checked offline
            target, _, anchor = href.partition("#")
            file = (page.parent / target).resolve() if target else page
            assert file.exists(), f"{page.name}: {href} -> no such file"
            if anchor and file.suffix == ".md":
                assert anchor in _slugs(file), f"{page.name}: {href} -> no such heading in {file.name}"
            checked += 1
    assert checked >= 5
