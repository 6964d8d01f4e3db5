"""Console output: a progress bar on a terminal, plain log lines elsewhere (CI)."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def is_terminal() -> bool:
    return sys.stderr.isatty()


class RowProgress:
    """Rows committed so far, as a rich bar on a TTY or a line every ~10 s otherwise."""

    def __init__(self, total: int, description: str, console: Console | None = None, enabled: bool = True):
        self.total = total
        self.done = 0
        self.console = console or Console(stderr=True)
        self.interactive = enabled and is_terminal()
        self.enabled = enabled
        self.last_log = time.monotonic()
        self.bar: Progress | None = None
        if self.interactive:
            self.bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("rows"), TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
            )
            self.task = self.bar.add_task(description, total=total)

    def __enter__(self) -> "RowProgress":
        if self.bar:
            self.bar.start()
        return self

    def advance(self, rows: int) -> None:
        self.done += rows
        if self.bar:
            self.bar.update(self.task, completed=self.done)
        elif self.enabled and time.monotonic() - self.last_log > 10:
            self.console.print(f"labeled {self.done}/{self.total} rows", highlight=False)
            self.last_log = time.monotonic()

    def __exit__(self, *exc) -> None:
        if self.bar:
            self.bar.stop()
