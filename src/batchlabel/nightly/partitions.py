"""The nightly date partitions ``ROOT/date=YYYY-MM-DD/``: naming, listing, and the labels they hold.

Only committed partitions (a ``_manifest.json``, see io/sink.py) count: a night that crashed before
committing is ignored by every reader here.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Iterator

import pyarrow as pa

from batchlabel.errors import BatchlabelError
from batchlabel.io.sink import read_committed, read_manifest
from batchlabel.io.storage import StorageSettings, join

PARTITION_PREFIX = "date="
KEY_COLUMNS = ["id", "text_hash", "labeler_fingerprint", "label", "error"]
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
) -> Iterator[tuple[str, str]]:
    """(date, url) of each committed partition, ascending, with date < ``before`` and date <= ``upto``."""
    for date in list_partitions(root, storage):
        if (before is not None and date >= before) or (upto is not None and date > upto):
            break
        partition = partition_url(root, date)
        if read_manifest(partition, storage) is not None:
            yield date, partition


def latest_keys(root: str, storage: StorageSettings, before: str) -> dict[str, tuple]:
    """id -> (text_hash, fingerprint, label, error, date) of each id's latest label before ``before``.

    Reads the key columns of every committed partition: call it once per night and pass the result on.
    """
    latest: dict[str, tuple] = {}
    for date, partition in committed_partitions(root, storage, before=before):
        table = read_committed(partition, storage, columns=KEY_COLUMNS)
        columns = [table.column(name).to_pylist() for name in KEY_COLUMNS]
        for key, digest, fingerprint, label, error in zip(*columns):
            latest[key] = (digest, fingerprint, label, error, date)
    return latest


def current_labels(root: str, storage: StorageSettings, upto: str | None = None) -> pa.Table:
    """The corpus's current labels: the latest row of each id over committed partitions up to ``upto``.

    Ids removed from the corpus stay in it (they were labeled once); filter by the corpus if needed.
    """
    tables = []
    for date, partition in committed_partitions(root, storage, upto=upto):
        table = read_committed(partition, storage)
        tables.append(table.append_column("date", pa.array([date] * table.num_rows, pa.string())))
    if not tables:
        raise BatchlabelError(f"{root} holds no committed nightly partition.")
    table = pa.concat_tables(tables, promote_options="permissive")
    seen: dict[str, int] = {}
    for index, key in enumerate(table.column("id").to_pylist()):
        seen[key] = index  # later partitions win
    return table.take(pa.array(sorted(seen.values())))
