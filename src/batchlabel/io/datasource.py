"""The input as a stream of shard descriptors that the labeling actors read themselves (pull, not push).

``shard_items(plan, todo)`` is one small item per shard still to do: which file, which rows or bytes, and the
read unit's span. The run turns them into a Ray dataset of one-row blocks (``ray.data.from_items``), so the
actor pool hands each shard to whichever actor is free (one block in flight per actor); the actor reads the
shard with a ``ShardReader`` and labels it at once. So:

- work is balanced shard by shard over all actors, whatever the file layout (a single-file corpus used to be
  one read unit whose shards Ray joined into a few big blocks: one actor labeled most of the rows);
- nothing is read before an actor is ready for it: the first shard is committed before the last one is read,
  and memory holds only the shards being labeled;
- no input rows travel through the object store: an actor labels what it read.

A read unit's shards (a row group cut every ``shard_rows`` rows) reach the actors in plan order; each actor
keeps a forward-only ``ParquetCursor`` per unit, so a big row group is decoded once per actor, not once per shard.
(docs/design.md, "Data path: shards pulled by the labeling actors")
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict
from typing import Iterator

import pyarrow as pa

from batchlabel.config import InputSpec
from batchlabel.io.shards import InputFile, InputPlan, Shard
from batchlabel.io.source import ParquetCursor, read_unit
from batchlabel.io.storage import StorageSettings

#: the one column of a descriptor block
UNIT_COLUMN = "_unit"
CURSORS_KEPT = 4  # open Parquet cursors per actor (one per read unit it is working through)


def shard_items(plan: InputPlan, todo: set[str]) -> list[dict]:
    """One descriptor per shard in ``todo``, in plan order: ``{"_unit": json}`` (file, shard, unit span)."""
    items = []
    for file in plan.files:
        spans: dict[int, tuple[int, int]] = {}
        for shard in file.shards:
            lo, hi = spans.get(shard.unit, (shard.start, shard.stop))
            spans[shard.unit] = (min(lo, shard.start), max(hi, shard.stop))
        bare = {"url": file.url, "format": file.format, "index": file.index, "size": file.size, "num_rows": file.num_rows}
        for shard in file.shards:
            if shard.key in todo:
                items.append({UNIT_COLUMN: json.dumps({"file": bare, "shard": asdict(shard), "span": spans[shard.unit]})})
    return items


class ShardReader:
    """Reads the shards that descriptors name, keeping a Parquet cursor per read unit (lives in an actor)."""

    def __init__(self, spec: InputSpec, storage: StorageSettings):
        self.spec, self.storage = spec, storage
        self.cursors: OrderedDict[tuple[str, int, int], ParquetCursor] = OrderedDict()

    def read(self, descriptor: str) -> Iterator[tuple[Shard, pa.Table]]:
        item = json.loads(descriptor)
        file, shard = InputFile(**item["file"]), Shard(**item["shard"])
        cursor = None
        if file.format == "parquet":
            key = (file.url, *item["span"])
            cursor = self.cursors.pop(key, None)
            if cursor is None or cursor.position > shard.start:
                cursor = ParquetCursor(self.spec, self.storage, file, *item["span"])
            self.cursors[key] = cursor
            while len(self.cursors) > CURSORS_KEPT:
                self.cursors.popitem(last=False)
        yield from read_unit(self.spec, self.storage, file, [shard], cursor)
