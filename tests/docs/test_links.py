"""Every relative link in the user docs points at a file that exists."""

from __future__ import annotations

import re

import pytest

from tests.docs.snippets import ROOT

DOCS = sorted([ROOT / "README.md", ROOT / "deploy" / "README.md", ROOT / "loadtests" / "README.md",
               *(ROOT / "docs").rglob("*.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("document", DOCS, ids=[str(path.relative_to(ROOT)) for path in DOCS])
def test_relative_links_resolve(document):
    broken = [target for target in LINK.findall(document.read_text())
              if not target.startswith(("http://", "https://", "mailto:", "#"))
              and not (document.parent / target.split("#")[0]).exists()]
    assert broken == [], f"{document.relative_to(ROOT)} links to missing files: {broken}"
