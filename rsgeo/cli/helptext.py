"""Help texts as the terminal should show them: paragraphs re-wrapped, lists kept."""

from __future__ import annotations

import inspect


def reflow(doc: str) -> str:
    """``doc`` with each paragraph's lines joined into one (re-wrapped where it is shown);
    a paragraph with a bullet (``- ``, ``* ``) or an indented line is kept as it is."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(p if any(line.startswith(("- ", "* ", " ")) for line in p.splitlines())
                       else " ".join(p.split()) for p in paragraphs)
