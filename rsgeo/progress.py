"""Progress bars for long work (rich), silenced by ``-q`` or when stderr is not a terminal.

Library functions call :func:`progress` and get an object with ``advance(n)``; the CLI
sets :data:`ENABLED` from ``-q``. Bars go to stderr so stdout stays clean for ``--json``.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

ENABLED: bool | None = None  # None: only when stderr is a terminal


class _Null:
    def advance(self, n: int = 1) -> None:
        pass

    def update(self, **_) -> None:
        pass


@contextmanager
def progress(total: int | None, description: str, unit: str = "tiles") -> Iterator:
    """A progress bar over ``total`` items with rate and ETA, or a no-op when disabled."""
    on = ENABLED if ENABLED is not None else sys.stderr.isatty()
    if not on:
        yield _Null()
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                               TextColumn, TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task):
            return Text(f"{task.speed:.1f} {unit}/s" if task.speed else f"- {unit}/s")

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               Rate(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total)

        class _Bar:
            def advance(self, n: int = 1) -> None:
                bar.advance(task, n)

            def update(self, **fields) -> None:
                bar.update(task, **fields)

        yield _Bar()
