"""What the labeling actors add to a block that does not come from batchlabel's own reader (``label_dataset``
in a user's pipeline): a null ``gold`` when missing, and the ``_shard``/``_row`` columns the labeler keeps."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

#: columns batchlabel's reader adds (and its writer uses); dropped from a user pipeline's output
INTERNAL = ["_shard", "_row"]


def with_internal_columns(block: pa.Table) -> pa.Table:
    """``block`` with ``gold`` (null when absent), ``_shard`` (null) and ``_row`` (0..n-1) columns."""
    n = block.num_rows
    if "gold" not in block.column_names:
        block = block.append_column("gold", pa.nulls(n, pa.string()))
    block = block.append_column("_shard", pa.nulls(n, pa.string()))
    return block.append_column("_row", pa.array(np.arange(n, dtype=np.int64)))
