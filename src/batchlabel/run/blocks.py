"""Block plumbing shared by the labeling actors (``run.label_dataset.BlockLabeler``, ``run.cascade.StageLabeler``):
reading the shards that batchlabel's own run hands them as descriptors (``PulledShards``), what they add to a
block that comes from a user's pipeline (``label_dataset``: a null ``gold`` when missing, and the
``_shard``/``_row`` columns the labeler keeps), labeling a block in ``batch_size`` slices, and cutting the output
where the shard changes."""

from __future__ import annotations

import time
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: columns batchlabel's reader adds (and its writer uses); dropped from a user pipeline's output
INTERNAL = ["_shard", "_row"]


def with_internal_columns(block: pa.Table) -> pa.Table:
    """``block`` with ``gold`` (null when absent), ``_shard`` (null) and ``_row`` (0..n-1) columns."""
    n = block.num_rows
    if "gold" not in block.column_names:
        block = block.append_column("gold", pa.nulls(n, pa.string()))
    block = block.append_column("_shard", pa.nulls(n, pa.string()))
    return block.append_column("_row", pa.array(np.arange(n, dtype=np.int64)))


def label_in_slices(label: Callable[[pa.Table], pa.Table], block: pa.Table, batch_size: int) -> pa.Table:
    """``label`` applied to ``block`` in ``batch_size`` slices, as one table (an empty block still gets the output
    columns: it is labeled as one empty slice)."""
    starts = range(0, block.num_rows, batch_size) or [0]
    return pa.concat_tables([label(block.slice(start, batch_size)) for start in starts], promote_options="permissive")


def shard_runs(table: pa.Table) -> Iterator[pa.Table]:
    """``table`` cut where ``_shard`` changes: one output per shard, so Ray's block shaping joins whole shards
    and cuts none (docs/design.md, "Data path: writes on the workers, duplicate ids")."""
    keys = table.column("_shard").combine_chunks()
    if len(keys) < 2:
        yield table
        return
    changes = np.flatnonzero(pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1)).to_numpy(zero_copy_only=False))
    bounds = [0, *(changes + 1).tolist(), len(keys)]
    for start, stop in zip(bounds[:-1], bounds[1:]):
        yield table.slice(start, stop - start)


class PulledShards:
    """The reading side of a labeling actor in ``batchlabel run``: each block it gets is one shard descriptor
    (io/datasource.py); it reads the shard, tells the run's ledger about shards that keep no row (the driver
    commits those) and, once labeled, which actor labeled which shard when (the run's timeline)."""

    def __init__(self, input_json: str, storage, ledger=None):
        import ray

        from batchlabel.config import InputSpec
        from batchlabel.io.datasource import ShardReader

        self.reader = ShardReader(InputSpec.model_validate_json(input_json), storage)
        self.ledger = ledger
        self.actor = ray.get_runtime_context().get_actor_id() if ray.is_initialized() else ""

    def tables(self, block: pa.Table) -> Iterator[tuple[str, pa.Table, float]]:
        """(shard key, normalised table, read start) for each non-empty shard the block's descriptors name."""
        from batchlabel.io.datasource import UNIT_COLUMN

        for descriptor in block.column(UNIT_COLUMN).to_pylist():
            read_at = time.time()
            for shard, table in self.reader.read(descriptor):
                if table.num_rows:
                    yield shard.key, table, read_at
                elif self.ledger is not None:
                    import ray

                    ray.get(self.ledger.empty.remote(shard.key))
                read_at = time.time()

    def labeled(self, key: str, rows: int, read_at: float, label_at: float) -> None:
        if self.ledger is not None:
            self.ledger.labeled.remote({"key": key, "actor": self.actor, "rows": rows, "read_at": read_at,
                                        "label_at": label_at, "done_at": time.time()})
