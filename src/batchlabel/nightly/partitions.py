"""The nightly date partitions ``ROOT/date=YYYY-MM-DD/``: naming, listing, and the labels they hold.

Only committed partitions (a ``_manifest.json``, see io/sink.py) count: a night that crashed before
committing is ignored by every reader here.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Iterator

import numpy as np
import pyarrow as pa

from batchlabel.errors import BatchlabelError
from batchlabel.io.reads import read_parquet_files
from batchlabel.io.sink import committed_files, read_manifest
from batchlabel.io.storage import StorageSettings, join

PARTITION_PREFIX = "date="
KEY_COLUMNS = ["id", "text_hash", "labeler_fingerprint", "label", "error"]
ORDER = "__batchlabel_order"  # a row-number column of the joins and group-bys below
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def check_date(value: str | None) -> str:
    """The night's date (YYYY-MM-DD); default: today (local time)."""
    if value is None:
        return dt.date.today().isoformat()
    if not _DATE.match(value):
        raise BatchlabelError(f"--date {value!r}: expected YYYY-MM-DD, for example 2026-11-24.")
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise BatchlabelError(f"--date {value!r} is not a valid calendar date.") from None
    return value


def partition_url(root: str, date: str) -> str:
    """The directory of the night ``date`` under the pipeline output ``root``."""
    return join(root, f"{PARTITION_PREFIX}{date}")


def list_partitions(root: str, storage: StorageSettings) -> list[str]:
    """Dates of the ``date=YYYY-MM-DD`` directories under ``root``, ascending."""
    from pyarrow import fs as pafs

    filesystem, path = storage.resolve(root)
    try:
        entries = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as err:
        raise BatchlabelError(f"Cannot list the pipeline output {root}: {err}") from None
    dates = []
    for entry in entries:
        name = entry.base_name
        if entry.type == pafs.FileType.Directory and name.startswith(PARTITION_PREFIX):
            date = name[len(PARTITION_PREFIX) :]
            if _DATE.match(date):
                dates.append(date)
    return sorted(dates)


def committed_partitions(
    root: str, storage: StorageSettings, before: str | None = None, upto: str | None = None
) -> Iterator[tuple[str, str, dict]]:
    """(date, url, manifest) of each committed partition, ascending, with date < ``before`` and date <= ``upto``."""
    for date in list_partitions(root, storage):
        if (before is not None and date >= before) or (upto is not None and date > upto):
            break
        partition = partition_url(root, date)
        manifest = read_manifest(partition, storage)
        if manifest is not None:
            yield date, partition, manifest


def read_partitions(root: str, storage: StorageSettings, columns: list[str] | None = None, before: str | None = None,
                    upto: str | None = None) -> pa.Table | None:
    """The ``columns`` of every committed partition's rows, in date order, with a ``date`` column (None: none).

    The part files of all nights are read together (io/reads.py: in parallel, only those columns).
    """
    files = [(date, url) for date, partition, manifest in committed_partitions(root, storage, before, upto)
             for url in committed_files(partition, manifest)]
    if not files:
        return None
    tables = read_parquet_files([url for _, url in files], storage, columns)
    dated = [t.append_column("date", pa.array([date] * t.num_rows, pa.string())) for (date, _), t in zip(files, tables)]
    return pa.concat_tables(dated, promote_options="permissive")


def latest_keys(root: str, storage: StorageSettings, before: str) -> pa.Table:
    """(id, text_hash, labeler_fingerprint, label, error, date): each id's latest label before ``before``.

    Reads the key columns (only those) of every committed partition: call it once per night and pass the result
    on. One row per id, in the order of the rows that hold the latest labels.
    """
    table = read_partitions(root, storage, KEY_COLUMNS, before=before)
    if table is None:
        return pa.schema([(name, pa.string()) for name in [*KEY_COLUMNS, "date"]]).empty_table()
    return last_per_key(table.select([*KEY_COLUMNS, "date"]))


def last_per_key(table: pa.Table, key: str = "id") -> pa.Table:
    """The last row of each ``key`` value (later rows win), kept in table order (an Arrow group-by)."""
    if not table.num_rows:
        return table
    indexed = table.select([key]).append_column(ORDER, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    last = indexed.group_by(key, use_threads=False).aggregate([(ORDER, "max")]).column(f"{ORDER}_max")
    return table.take(pa.array(np.sort(last.to_numpy()), pa.int64()))


def lookup(left: pa.Table, right: pa.Table, columns: list[str], key: str = "id") -> pa.Table:
    """``left`` (rows in order) with ``columns`` of the ``right`` row of the same ``key`` (one per key there), and
    ``_found`` (null where ``right`` has none): an Arrow hash join."""
    left = left.append_column(ORDER, pa.array(np.arange(left.num_rows, dtype=np.int64)))
    right = right.select([key, *columns]).append_column("_found", pa.array(np.ones(right.num_rows, dtype=bool)))
    return left.join(right, keys=key, join_type="left outer").sort_by(ORDER).drop_columns([ORDER])


def current_labels(root: str, storage: StorageSettings, upto: str | None = None) -> pa.Table:
    """The corpus's current labels: the latest row of each id over committed partitions up to ``upto``.

    Ids removed from the corpus stay in it (they were labeled once); filter by the corpus if needed.
    """
    table = read_partitions(root, storage, upto=upto)
    if table is None:
        raise BatchlabelError(f"{root} holds no committed nightly partition.")
    return last_per_key(table)
