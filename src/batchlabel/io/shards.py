"""The plan's vocabulary: input files, their shards (the resume unit) and the plan itself."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

SAMPLE_BYTES = 1 << 20  # head of a text file sampled for its row size


@dataclass(frozen=True)
class Shard:
    """A committed-or-not unit of output of one input file.

    kind "rows": rows [start, stop) of a Parquet file; "bytes": the lines starting in bytes [start, stop) of a
    text file; "lines": parsed rows [start, stop) of a text file (stop -1: to the end).
    """

    file_index: int
    index: int
    start: int
    stop: int
    rows: int | None  # raw rows before the split (None: unknown, byte ranges)
    kind: str = "rows"
    unit: int = 0  # read task (within the file) that reads this shard

    @property
    def key(self) -> str:
        return f"{self.file_index:05d}-{self.index:05d}"


@dataclass
class InputFile:
    url: str
    format: str
    index: int
    size: int = 0
    num_rows: int | None = None  # from the footer (Parquet) or the limit prefix; None when unknown
    shard_bytes: int = 0  # estimated in-memory bytes of its biggest shard (footer sizes / byte ranges)
    shards: list[Shard] = field(default_factory=list)


@dataclass
class InputPlan:
    files: list[InputFile]
    keep_share: float = 1.0  # share of the planned raw rows that the split/limit keeps
    rows_exact: bool = True  # total_rows is exact (else an estimate: byte ranges, a split without a limit)
    split_hash: str = ""  # the split's hash function when a split is set (older outputs used another one)

    @property
    def shards(self) -> list[Shard]:
        return [s for f in self.files for s in f.shards]

    @property
    def max_shard_bytes(self) -> int:
        return max((f.shard_bytes for f in self.files), default=0)

    @property
    def total_rows(self) -> int:
        """Rows to label: exact for Parquet without a split, an estimate otherwise (see ``exact``)."""
        return round(sum(s.rows or 0 for s in self.shards) * self.keep_share)

    def fingerprint(self) -> str:
        blob = "|".join(f"{f.url}:{f.num_rows if f.num_rows is not None else f.size}" for f in self.files)
        blob += f"|split:{self.split_hash}" if self.split_hash else ""
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
