"""The documentation's relative links point to files that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
# [text](target) outside code; the target ends at the first space or closing parenthesis.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def relative_links(page: Path) -> list[str]:
    """Relative link targets of a markdown page, without their ``#anchor``, code blocks skipped."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t.split("#", 1)[0] for t in targets
            if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_there_are_pages_to_check() -> None:
    assert ROOT / "README.md" in PAGES
    assert ROOT / "docs" / "guide.md" in PAGES


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(page: Path) -> None:
    missing = [t for t in relative_links(page) if t and not (page.parent / t).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to files that do not exist: {missing}"


SOURCES = sorted({*PAGES, *(p for d in ("shopgym", "envs", "agents", "encoders", "ope", "benchmarks", "conf", "tests")
                            for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".yaml"))})
DOC_PATH = re.compile(r"(?<![\w./-])docs/[\w./-]*\.md")


def test_docs_paths_named_in_text_and_code_exist() -> None:
    """A page or docstring that names ``docs/<page>.md`` (from the repository root) names a page that exists."""
    missing = sorted({f"{src.relative_to(ROOT)}: {name}" for src in SOURCES
                      for name in DOC_PATH.findall(src.read_text(encoding="utf-8")) if not (ROOT / name).exists()})
    assert not missing, f"paths to pages that do not exist: {missing}"
