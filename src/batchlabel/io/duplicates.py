"""Duplicate ids across a whole run, found without an id set in the driver.

Every committed shard leaves its id hashes (64-bit, with the row numbers) in ``_batchlabel/ids/KEY.npz``.
Ray tasks check them as a hash-partitioned reduction: leaf tasks load groups of shards and cut their hashes
into B hash ranges; one reduce task per range sorts its part and reports equal neighbours. Only a few
candidate pairs reach the driver, which confirms them on the id strings (a 64-bit hash collision is not a
duplicate) and names both places. (docs/design.md, "Data path: writes on the workers, duplicate ids")
"""

from __future__ import annotations

import io

import numpy as np

from batchlabel.io.reads import read_rows_at
from batchlabel.io.storage import StorageSettings, join

HASHES_PER_REDUCE = 1 << 23  # 8M hashes (~200 MB sorted with their shard and row) per reduce task
SHARDS_PER_LEAF = 64
EXAMPLES = 8
ENTRY = np.dtype([("hash", "<u8"), ("shard", "<i8"), ("row", "<i8")])


def _load(output: str, storage: StorageSettings, key: str) -> np.lib.npyio.NpzFile:
    from batchlabel.io.sink import ids_url

    return np.load(io.BytesIO(storage.read_bytes(ids_url(output, key))))


def leaf(output: str, storage: StorageSettings, keys: list[str], ordinals: list[int], buckets: int) -> list[np.ndarray]:
    """(hash, shard ordinal, row) of a group of shards, cut into ``buckets`` hash ranges."""
    parts = []
    for key, ordinal in zip(keys, ordinals):
        saved = _load(output, storage, key)
        entries = np.empty(len(saved["hashes"]), ENTRY)
        entries["hash"], entries["shard"], entries["row"] = saved["hashes"], ordinal, saved["rows"]
        parts.append(entries)
    entries = np.concatenate(parts) if parts else np.empty(0, ENTRY)
    bucket = ((entries["hash"] >> np.uint64(32)) * np.uint64(buckets)) >> np.uint64(32)
    return [entries[bucket == b] for b in range(buckets)]


def _leaf_returns(output, storage, keys, ordinals, buckets):
    """``leaf`` for a Ray task with ``num_returns=buckets`` (one return value is the array itself)."""
    parts = leaf(output, storage, keys, ordinals, buckets)
    return parts[0] if buckets == 1 else parts


def reduce(*parts: np.ndarray) -> np.ndarray:
    """Up to EXAMPLES pairs of entries with equal hashes: shape (n, 2)."""
    entries = np.concatenate(parts) if parts else np.empty(0, ENTRY)
    entries = entries[np.argsort(entries["hash"], kind="stable")]
    same = np.flatnonzero(entries["hash"][1:] == entries["hash"][:-1])[:EXAMPLES]
    return np.stack([entries[same], entries[same + 1]], axis=1) if len(same) else np.empty((0, 2), ENTRY)


def candidate_pairs(output: str, storage: StorageSettings, keys: list[str], total_rows: int) -> np.ndarray:
    """Pairs of (shard ordinal, row) whose id hashes are equal, from Ray tasks (or in-process without Ray)."""
    buckets = max(1, -(-total_rows // HASHES_PER_REDUCE))
    groups = [list(range(i, min(i + SHARDS_PER_LEAF, len(keys)))) for i in range(0, len(keys), SHARDS_PER_LEAF)]
    try:
        import ray

        remote = ray.is_initialized()
    except ImportError:
        remote = False
    if not remote:
        leaves = [leaf(output, storage, [keys[i] for i in g], g, buckets) for g in groups]
        found = [reduce(*(part[b] for part in leaves)) for b in range(buckets)]
        return np.concatenate(found) if found else np.empty((0, 2), ENTRY)
    leaf_task = ray.remote(num_cpus=0.5, num_returns=buckets)(_leaf_returns)
    reduce_task = ray.remote(num_cpus=0.5)(reduce)
    refs = [leaf_task.remote(output, storage, [keys[i] for i in g], g, buckets) for g in groups]
    refs = [r if isinstance(r, list) else [r] for r in refs]
    found = ray.get([reduce_task.remote(*(part[b] for part in refs)) for b in range(buckets)])
    return np.concatenate(found) if found else np.empty((0, 2), ENTRY)


def _rows_of(output: str, storage: StorageSettings, key: str) -> np.ndarray:
    """The row numbers saved with a shard's id hashes (only that member of the .npz is read, from a stream)."""
    from batchlabel.io.sink import ids_url

    filesystem, path = storage.resolve(ids_url(output, key))
    with filesystem.open_input_file(path) as handle, np.load(handle) as saved:
        return saved["rows"]


def _id_at(output: str, storage: StorageSettings, key: str, row: int) -> str:
    """The id of input row ``row`` of shard ``key``: one row group of the part file's id column is read."""
    from batchlabel.io.sink import part_name

    position = int(np.searchsorted(_rows_of(output, storage, key), row))  # part files are sorted by row
    table = read_rows_at(join(output, part_name(key)), storage, [position], ["id"])
    return table.column("id")[0].as_py()


def find_duplicate(output: str, storage: StorageSettings, keys: list[str], total_rows: int) -> tuple | None:
    """(id, (key, row), (key, row)) of one duplicated id among the shards ``keys``, or None."""
    keys = sorted(keys)
    for first, second in candidate_pairs(output, storage, keys, total_rows):
        places = [(keys[int(e["shard"])], int(e["row"])) for e in (first, second)]
        ids = [_id_at(output, storage, key, row) for key, row in places]
        if ids[0] == ids[1]:
            return ids[0], *sorted(places)
    return None
