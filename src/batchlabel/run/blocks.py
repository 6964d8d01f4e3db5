"""Block plumbing shared by the labeling actors (``run.label_dataset.BlockLabeler``, ``run.cascade.StageLabeler``):
what they add to a block that does not come from batchlabel's own reader (``label_dataset`` in a user's pipeline:
a null ``gold`` when missing, and the ``_shard``/``_row`` columns the labeler keeps), labeling a block in
``batch_size`` slices, and cutting the output where the shard changes."""

from __future__ import annotations

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
