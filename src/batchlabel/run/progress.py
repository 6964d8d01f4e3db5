"""Console output: a progress bar on a terminal, plain log lines elsewhere (CI); the run's commit ledger."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def is_terminal() -> bool:
    return sys.stderr.isatty()


class CommitLedger:
    """Ray actor (``ray.remote(CommitLedger)``): what the write tasks committed and which shards were empty.

    Write tasks report each commit marker (fire and forget), the labeling actors each shard that kept no rows
    (and wait for it) and, per shard, which actor read and labeled it when (``labeled``: the run's timeline,
    fire and forget); the driver polls ``snapshot()`` for the progress line.
    """

    def __init__(self):
        self.rows = 0
        self.tokens = 0
        self.first_commit_at: float | None = None
        self.keys: set[str] = set()
        self.empties: set[str] = set()
        self.commits: dict[str, float] = {}
        self.labels: dict[str, dict] = {}

    def commit(self, marker: dict) -> None:
        if marker["key"] in self.keys:  # a retried write task commits the same shard again
            return
        self.keys.add(marker["key"])
        self.rows += marker["rows"]
        self.tokens += sum(marker.get("tokens", {}).values())
        self.first_commit_at = self.first_commit_at or time.time()
        self.commits[marker["key"]] = time.time()

    def labeled(self, record: dict) -> None:
        """One shard's trip through a labeling actor: key, actor, rows, read_at, label_at, done_at (epoch s)."""
        self.labels.setdefault(record["key"], record)

    def timeline(self) -> list[dict]:
        """Per shard: the ``labeled`` record plus ``committed_at``, in order of reading."""
        rows = [{**r, "committed_at": self.commits.get(k)} for k, r in self.labels.items()]
        return sorted(rows, key=lambda r: r["read_at"])

    def empty(self, key: str) -> None:
        self.empties.add(key)

    def snapshot(self) -> dict:
        return {"rows": self.rows, "tokens": self.tokens, "first_commit_at": self.first_commit_at}

    def empty_keys(self) -> list[str]:
        return sorted(self.empties)


def actor_shares(timeline: list[dict], started_at: float) -> dict[str, dict]:
    """Per labeling actor (short id): shards, rows, seconds busy reading + labeling, and when it first read and
    last finished (seconds after ``started_at``): how evenly a run kept its actors busy."""
    shares: dict[str, dict] = {}
    for record in timeline:
        share = shares.setdefault(record["actor"][:12] or "local", {"shards": 0, "rows": 0, "busy_s": 0.0,
                                                                    "first_read_s": None, "last_done_s": 0.0})
        share["shards"] += 1
        share["rows"] += record["rows"]
        share["busy_s"] = round(share["busy_s"] + record["done_at"] - record["read_at"], 3)
        first = round(record["read_at"] - started_at, 3)
        share["first_read_s"] = first if share["first_read_s"] is None else min(share["first_read_s"], first)
        share["last_done_s"] = max(share["last_done_s"], round(record["done_at"] - started_at, 3))
    return shares


class RowProgress:
    """Rows committed so far (and tokens/s when the labeler counts tokens), as a rich bar on a TTY or a line
    every ~10 s otherwise."""

    def __init__(self, total: int, description: str, console: Console | None = None, enabled: bool = True):
        self.total = total
        self.done = 0
        self.tokens = 0
        self.started = time.monotonic()
        self.console = console or Console(stderr=True)
        self.interactive = enabled and is_terminal()
        self.enabled = enabled
        self.last_log = time.monotonic()
        self.bar: Progress | None = None
        self.description = description
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

    def tokens_text(self) -> str:
        elapsed = time.monotonic() - self.started
        return f", {self.tokens / elapsed:,.0f} tokens/s" if self.tokens and elapsed > 0 else ""

    def advance(self, rows: int, tokens: int = 0) -> None:
        self.update(self.done + rows, self.tokens + tokens)

    def update(self, done: int, tokens: int = 0) -> None:
        """Set the totals committed so far (rows, tokens)."""
        if done == self.done and tokens == self.tokens:
            return
        self.done, self.tokens = done, tokens
        if self.bar:
            self.bar.update(self.task, completed=self.done, description=f"{self.description}{self.tokens_text()}")
        elif self.enabled and time.monotonic() - self.last_log > 10:
            self.console.print(f"labeled {self.done}/{self.total} rows{self.tokens_text()}", highlight=False)
            self.last_log = time.monotonic()

    def __exit__(self, *exc) -> None:
        if self.bar:
            self.bar.stop()
