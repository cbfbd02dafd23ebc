"""The Python snippets of a Markdown file, so a test can run them as a reader would."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def python_snippet(markdown: str, containing: str) -> str:
    """The one ```python block of ROOT/markdown that contains `containing`."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / markdown).read_text(), re.S)
    found = [block for block in blocks if containing in block]
    assert len(found) == 1, f"{markdown}: expected one python snippet containing {containing!r}, found {len(found)}"
    return found[0]
