"""Help texts as the terminal should show them: paragraphs re-wrapped, lists kept."""

from __future__ import annotations

import inspect


def reflow(doc: str) -> str:
    """``doc`` with each paragraph's lines joined into one (re-wrapped where it is shown);
    a paragraph with a bullet (``- ``, ``* ``) or an indented line is kept as it is."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(p if any(line.startswith(("- ", "* ", " ")) for line in p.splitlines())
                       else " ".join(p.split()) for p in paragraphs)


def examples(*lines: str) -> str:
    """A command's ``Examples:``, the epilog of its ``--help``: one shell line each, shown as
    written; at most 78 characters, so no line wraps on an 80-column terminal
    (tests/test_cli_basics.py parses every one against its command)."""
    return "Examples:\n\n" + "\n".join(lines)
