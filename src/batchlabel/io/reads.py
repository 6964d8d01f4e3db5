"""Reads of committed output, nightly history, staged and review files: streamed, projected, pushed down.

Every Parquet file written by batchlabel is read here, and never downloaded whole to read part of it
(docs/design.md, "Storage reads: streamed, projected, pushed down"):

- the file is opened as a random-access ``pyarrow.fs`` input file (local, or ranged GETs on S3): the footer
  first, then only the column chunks asked for (``columns``: projection; a column the file lacks is left out,
  so a shard written before a column existed reads as null there once tables are concatenated); a file of up
  to 128 KiB is read whole, in one request (``SMALL_FILE``);
- an id look-up (``ids``) goes through ``pyarrow.dataset`` with ``id IN (...)`` as its filter: row groups
  whose id statistics (min/max) exclude every wanted id are not read at all (predicate push-down);
- a look-up by row position (``read_rows_at``) reads only the row groups that hold those rows.

Several files are read in parallel threads (Arrow releases the GIL), in their order.
"""

from __future__ import annotations

import bisect
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from batchlabel.io.storage import StorageSettings

READ_THREADS = 8
#: rows per Parquet row group of committed part files: the unit an id or row look-up reads
PART_ROW_GROUP_ROWS = 8192
#: Arrow's first read of a Parquet file: its last 64 KiB (the footer and what precedes it)
FOOTER_READ = 64 * 1024
#: files up to this size are read whole, in one request: Arrow's projected read costs the 64 KiB footer read plus
#: the column chunks (read again even where the footer read held them), more than the file when half of it is asked
SMALL_FILE = 2 * FOOTER_READ


@contextmanager
def open_parquet(url: str, storage: StorageSettings) -> Iterator[pq.ParquetFile]:
    """A Parquet file opened on a stream: only its footer is read until columns are asked for.

    A file of up to ``SMALL_FILE`` bytes is read whole, in one request (see there).
    """
    filesystem, path = storage.resolve(url)
    with filesystem.open_input_file(path) as handle:
        if handle.size() <= SMALL_FILE:
            yield pq.ParquetFile(pa.BufferReader(handle.read()))
        else:
            yield pq.ParquetFile(handle, pre_buffer=True)


def parquet_schema(url: str, storage: StorageSettings) -> pa.Schema:
    """The Arrow schema of a Parquet file (its footer only)."""
    with open_parquet(url, storage) as parquet:
        return parquet.schema_arrow


def _present(schema: pa.Schema, columns: Sequence[str] | None) -> list[str] | None:
    return None if columns is None else [c for c in columns if c in schema.names]


def read_parquet(
    url: str, storage: StorageSettings, columns: Sequence[str] | None = None, ids: Iterable[str] | None = None,
    id_column: str = "id", attempts: int = 4,
) -> pa.Table:
    """The ``columns`` (None: all) of one Parquet file that it has; with ``ids``, only the rows of those ids.

    A failed read (a dropped connection past the S3 client's own retries, a short read) is retried whole.
    """
    for attempt in range(attempts):
        try:
            return _read(url, storage, columns, ids, id_column)
        except FileNotFoundError:
            raise
        except (OSError, pa.ArrowInvalid):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def _read(url: str, storage: StorageSettings, columns, ids, id_column: str) -> pa.Table:
    if ids is None:
        with open_parquet(url, storage) as parquet:
            return parquet.read(columns=_present(parquet.schema_arrow, columns), use_threads=True)
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    filesystem, path = storage.resolve(url)
    with filesystem.open_input_file(path) as handle:  # a small file: whole, once (as in open_parquet)
        source = pa.py_buffer(handle.read()) if handle.size() <= SMALL_FILE else path
    fragment = ds.ParquetFileFormat().make_fragment(source, filesystem=None if isinstance(source, pa.Buffer) else filesystem)
    fragment.ensure_complete_metadata()  # the footer, read once: the scan below prunes row groups with it
    wanted = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(list(ids), pa.string())
    schema = fragment.physical_schema
    return fragment.to_table(schema=schema, columns=_present(schema, columns), filter=pc.field(id_column).isin(wanted))


def read_parquet_files(
    urls: Sequence[str], storage: StorageSettings, columns: Sequence[str] | None = None,
    ids: Iterable[str] | None = None, id_column: str = "id",
) -> list[pa.Table]:
    """``read_parquet`` of each file (in parallel threads), in the order of ``urls``."""
    if ids is not None and not isinstance(ids, (pa.Array, pa.ChunkedArray)):
        ids = pa.array(list(ids), pa.string())
    if len(urls) <= 1:
        return [read_parquet(url, storage, columns, ids, id_column) for url in urls]
    with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(urls))) as pool:
        return list(pool.map(lambda url: read_parquet(url, storage, columns, ids, id_column), urls))


def concat(tables: Sequence[pa.Table]) -> pa.Table:
    """Tables of files written at different times (a column missing in some: null there)."""
    return pa.concat_tables(tables, promote_options="permissive")


def read_rows_at(url: str, storage: StorageSettings, positions: Sequence[int], columns: Sequence[str]) -> pa.Table:
    """The rows at ``positions`` (0-based, in file order) of a Parquet file, reading only their row groups."""
    with open_parquet(url, storage) as parquet:
        sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        if any(not 0 <= p < sum(sizes) for p in positions):
            raise IndexError(f"rows {list(positions)} are not all inside {url} ({sum(sizes)} rows)")
        group_of = [bisect.bisect_right(starts, p) - 1 for p in positions]
        groups = sorted(set(group_of))
        table = parquet.read_row_groups(groups, columns=_present(parquet.schema_arrow, columns))
    offset = {g: sum(sizes[h] for h in groups[:i]) for i, g in enumerate(groups)}  # where group g starts in table
    take = [offset[g] + p - starts[g] for g, p in zip(group_of, positions)]
    return table.take(pa.array(take, pa.int64()))
