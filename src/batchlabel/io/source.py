"""Read planned shards as normalised Arrow tables: only the shard's bytes (Parquet row groups, byte ranges).

Runs in the labeling actors (io/datasource.py: ``ShardReader``) and in-process for small readers (training data, nightly staging).
A normalised table has id (string), text (large_string), gold (string), passthrough..., _shard, _row and
``_shard_rows`` (the rows the shard keeps after the split: the read task's own count, checked by the sink).
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchlabel.config import InputSpec
from batchlabel.io.formats import (
    id_hashes,
    in_split,
    iter_text_tables,
    normalised_ids,
    open_parquet,
    read_bytes_shard,
    read_error,
)
from batchlabel.io.planning import plan_input
from batchlabel.io.shards import InputFile, InputPlan, Shard
from batchlabel.io.storage import StorageSettings

ROW_COLUMNS = ["id", "text", "gold"]
INTERNAL_COLUMNS = ["_shard", "_row", "_shard_rows"]
PARQUET_BATCH_ROWS = 8192

__all__ = ["InputFile", "InputPlan", "ParquetCursor", "Shard", "plan_input", "read_shards", "read_unit", "in_split", "id_hashes"]


# --- shards ---


def _normalise_text(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Text as a string column; binary is decoded as UTF-8 with replacement, other types are cast."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return pc.cast(array, pa.large_string())
    if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
        values = [None if v is None else v.decode("utf-8", errors="replace") for v in array.to_pylist()]
        return pa.array(values, type=pa.large_string())
    if pa.types.is_null(array.type):
        return pa.nulls(len(array), pa.large_string())
    return pa.array([None if v is None else str(v) for v in array.to_pylist()], type=pa.large_string())


def normalise(spec: InputSpec, part: pa.Table, shard: Shard, first_row: int, where: str) -> pa.Table:
    """Normalised columns of one shard's raw rows, the split applied; ``_row`` counts from ``first_row``."""
    n = part.num_rows
    ids = normalised_ids(part, spec, where) if n else pa.array([], pa.string())
    columns = {
        "id": ids,
        "text": _normalise_text(part.column(spec.text_column)) if n else pa.array([], pa.large_string()),
        "gold": pc.cast(part.column(spec.gold_column), pa.string()) if spec.gold_column and n else pa.nulls(n, pa.string()),
    }
    for name in spec.passthrough:
        columns[name] = part.column(name) if name in part.column_names else pa.nulls(n)
    columns["_shard"] = pa.array([shard.key] * n, pa.string())
    columns["_row"] = pa.array(np.arange(first_row, first_row + n, dtype=np.int64))
    out = pa.table(columns)
    if spec.split is not None and n:
        out = out.filter(in_split(ids, spec.split))
    return out.append_column("_shard_rows", pa.array(np.full(out.num_rows, out.num_rows, dtype=np.int64)))


class ParquetCursor:
    """A forward-only reader over the row groups that hold rows [lo, hi) of one Parquet file.

    ``take(start, stop)`` returns file rows [start, stop) for any ``start`` at or after the end of the previous
    take: rows skipped in between are decoded and dropped, never kept. A labeling actor keeps one cursor per read
    unit (``ShardReader``), so the shards of one big row group that reach it in plan order cost one decode of the
    group per actor, not one per shard.
    """

    def __init__(self, spec: InputSpec, storage: StorageSettings, file: InputFile, lo: int, hi: int):
        pf = open_parquet(file, storage)
        meta = pf.metadata
        starts = [0, *accumulate(meta.row_group(i).num_rows for i in range(meta.num_row_groups))]
        groups = list(range(bisect_right(starts, lo) - 1, bisect_right(starts, hi - 1)))
        columns = list(dict.fromkeys(c for c in (spec.id_column, spec.text_column, spec.gold_column, *spec.passthrough) if c))
        self.file = file
        self.batches = pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=groups, columns=columns, use_threads=False)
        self.buffer: pa.Table | None = None
        self.position = starts[groups[0]]  # file row of the buffer's first row

    def take(self, start: int, stop: int) -> pa.Table:
        if start < self.position:
            raise ValueError(f"cursor at row {self.position} cannot go back to {start}")
        parts = [] if self.buffer is None else [self.buffer.slice(min(self.buffer.num_rows, start - self.position))]
        have = self.position + (0 if self.buffer is None else self.buffer.num_rows)
        try:
            while have < stop:
                batch = next(self.batches)
                if have + batch.num_rows > start:  # batches wholly before ``start`` are dropped at once
                    parts.append(pa.Table.from_batches([batch]).slice(max(0, start - have)))
                have += batch.num_rows
        except (pa.ArrowInvalid, OSError, StopIteration) as err:
            raise read_error(self.file, err) from None
        buffer = pa.concat_tables(parts, promote_options="permissive")
        self.buffer, self.position = buffer.slice(stop - start), stop
        return buffer.slice(0, stop - start)


def _parquet_unit(spec: InputSpec, storage: StorageSettings, file: InputFile, shards: list[Shard],
                  cursor: ParquetCursor | None = None) -> Iterator[tuple[Shard, pa.Table]]:
    ordered = sorted(shards, key=lambda s: s.start)
    if cursor is None or cursor.position > ordered[0].start:
        cursor = ParquetCursor(spec, storage, file, ordered[0].start, max(s.stop for s in shards))
    for shard in ordered:
        yield shard, normalise(spec, cursor.take(shard.start, shard.stop), shard, shard.start, f"file {file.url}")


def read_unit(spec: InputSpec, storage: StorageSettings, file: InputFile, shards: list[Shard],
              cursor: ParquetCursor | None = None) -> Iterator[tuple[Shard, pa.Table]]:
    """Yield (shard, normalised table) for the given shards of one read unit, reading only what they need.

    ``cursor``: a Parquet cursor left by an earlier call on the same unit, used when it has not passed the first
    shard yet (the caller keeps it; see ``ShardReader``)."""
    if not shards:
        return
    if file.format == "parquet":
        yield from _parquet_unit(spec, storage, file, shards, cursor)
        return
    for shard in shards:
        where = f"file {file.url} (shard {shard.key})"
        if shard.kind == "bytes":
            yield shard, normalise(spec, read_bytes_shard(spec, storage, file, shard), shard, 0, where)
            continue
        parts, seen = [], 0
        for table in iter_text_tables(spec, storage, file):
            parts.append(table)
            seen += table.num_rows
            if 0 <= shard.stop <= seen:
                break
        whole = pa.concat_tables(parts, promote_options="permissive") if parts else pa.table({spec.id_column: pa.array([], pa.string())})
        stop = whole.num_rows if shard.stop < 0 else min(shard.stop, whole.num_rows)
        yield shard, normalise(spec, whole.slice(shard.start, stop - shard.start), shard, shard.start, where)


def read_shards(spec: InputSpec, storage: StorageSettings, file: InputFile, shards: list[Shard]) -> Iterator[pa.Table]:
    """Yield one normalised table per shard (in-process, unit by unit)."""
    units: dict[int, list[Shard]] = {}
    for shard in shards:
        units.setdefault(shard.unit, []).append(shard)
    for unit in sorted(units):
        for _, table in read_unit(spec, storage, file, units[unit]):
            yield table
