"""Labeled shards as a Ray Data ``Datasink``: ``write()`` commits shards in the Ray write tasks, where the rows
are; ``on_write_complete()`` (driver, Ray's own commit hook) hands the markers to ``finalize``.

Rows of one shard normally arrive in one block (one read block per shard, labeled per block), so a write
call commits every shard it holds in full. Ray may still cut blocks (re-bundling, oversized blocks): a
shard that is not complete in a write call is parked as a piece and merged, exactly checked, after the
stream (``sink.merge_pieces``). Nothing incomplete is ever committed.

Ray 2.60 API used: ``Datasink.write(blocks, ctx) -> WriteReturnType``, ``on_write_complete(write_result:
WriteResult)`` with ``write_result.write_returns`` (one per write task), ``on_write_failed(error)``.
"""

from __future__ import annotations

from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from batchlabel.io.sink import commit_shard, write_piece
from batchlabel.io.storage import StorageSettings


def write_table(output: str, storage: StorageSettings, table: pa.Table, ledger=None) -> list[dict]:
    """Commit every complete shard in ``table``; park the others as pieces. Returns what was done."""
    done = []
    keys = table.column("_shard")
    for key in sorted(pc.unique(keys).to_pylist()):
        part = table.filter(pc.equal(keys, key))
        rows = part.column("_row").to_numpy()
        complete = part.num_rows == part.column("_shard_rows")[0].as_py() and len(set(rows.tolist())) == len(rows)
        if complete:
            marker = commit_shard(output, storage, key, part).__dict__
            done.append({"marker": marker})
            if ledger is not None:
                ledger.commit.remote(marker)
        else:
            done.append({"piece": key, "url": write_piece(output, storage, key, part)})
    return done


def make_datasink(output: str, storage: StorageSettings, finalize: Callable[[list[dict]], None], ledger=None):
    """A ``ray.data.Datasink``; ``finalize(write_returns)`` runs in the driver after the last write."""
    from ray.data.block import BlockAccessor
    from ray.data.datasource import Datasink

    class ShardDatasink(Datasink):
        def __init__(self):
            self.finalize = finalize

        def __getstate__(self):  # write tasks get the output location, never the driver's callback
            return {"finalize": None}

        def get_name(self) -> str:
            return "BatchlabelShards"

        def write(self, blocks, ctx) -> list[dict]:
            tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
            tables = [t for t in tables if t.num_rows]
            if not tables:
                return []
            return write_table(output, storage, pa.concat_tables(tables, promote_options="permissive"), ledger)

        def on_write_complete(self, write_result) -> None:
            self.finalize([item for items in write_result.write_returns for item in items])

    return ShardDatasink()
