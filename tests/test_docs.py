"""The README and the pages under ``docs/``: the README stays a front door (the Space's block first, under 15,000
bytes, its test command the one ``.ci/run`` runs, every page linked from it), and every relative link and image of
every page resolves to a file, and to a heading of it where the link names one (GitHub's anchors)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_BYTES = 15_000
FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")  # [text](target) and ![alt](target "title")
CODE_SPAN = re.compile(r"`[^`]*`")


def prose(text: str) -> list[str]:
    """The page's lines outside fenced code blocks, with inline code spans blanked (neither holds links)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(CODE_SPAN.sub("``", line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (hyphens and underscores kept), spaces to
    hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def relative_links(page: Path) -> list[str]:
    """The targets of ``page``'s links and images that point inside the repository (no scheme, no mail)."""
    targets = [m.group(1) for line in prose(page.read_text(encoding="utf-8")) for m in LINK.finditer(line)]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t, re.I)]


def headings_raw(page: Path) -> list[str]:
    """The heading lines of ``page`` as written (code spans kept), for the anchor of a heading with code in it."""
    text, fenced, out = page.read_text(encoding="utf-8"), False, []
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6}\s", line):
            out.append(line.lstrip("#").strip())
    return out


def page_anchors(page: Path) -> set[str]:
    """The anchors GitHub gives ``page``'s headings (a code span's text counts, without its backticks)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in headings_raw(page):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif anchor and file.suffix == ".md" and anchor not in page_anchors(file):
            broken.append(f"{target}: no heading with anchor #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_readme_is_a_front_door():
    data = README.read_bytes()
    assert len(data) < MAX_README_BYTES, (
        f"README.md is {len(data):,} bytes; move a section to docs/ (under {MAX_README_BYTES:,})")
    text = data.decode("utf-8")
    assert re.match(r"---\n.*?\n---\n\n# Decoding Playground\n", text, re.S), (
        "README.md must open with the Space's YAML block, then the title")


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README)}
    missing = [str(p.relative_to(ROOT)) for p in PAGES[1:] if p.resolve() not in linked]
    assert not missing, f"docs pages no link in README.md reaches: {missing}"


def test_the_readme_test_command_is_what_ci_runs():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    command = [line for line in lines if line and not line.startswith(("#", "set ", "cd "))]
    assert len(command) == 1, command
    bash_lines = [line for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
                  for line in block.splitlines()]
    assert command[0] in bash_lines, f"README.md's test command is not .ci/run's: {command[0]}"
